package llm

import (
	"encoding/json"
	"strings"
)

// ExtractJSON returns the JSON object in text: text itself when it is one, otherwise the
// object inside a Markdown code fence or between the first '{' and the last '}', which is how
// models answering in plain JSON mode (json_object, local servers) often wrap it. ok is false
// when no valid JSON object is found.
func ExtractJSON(text string) (object string, ok bool) {
	s := strings.TrimSpace(text)
	if isObject(s) {
		return s, true
	}
	if i := strings.Index(s, "```"); i >= 0 {
		body := s[i+3:]
		if nl := strings.IndexByte(body, '\n'); nl >= 0 && !strings.Contains(body[:nl], "{") {
			body = body[nl+1:] // Drop the fence's language tag.
		}
		if end := strings.Index(body, "```"); end >= 0 {
			if inner := strings.TrimSpace(body[:end]); isObject(inner) {
				return inner, true
			}
		}
	}
	start, end := strings.IndexByte(s, '{'), strings.LastIndexByte(s, '}')
	if start >= 0 && end > start {
		if inner := s[start : end+1]; isObject(inner) {
			return inner, true
		}
	}
	return "", false
}

func isObject(s string) bool {
	return len(s) >= 2 && s[0] == '{' && s[len(s)-1] == '}' && json.Valid([]byte(s))
}
