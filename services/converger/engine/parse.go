package engine

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"

	"github.com/convergence-dev/convergence/services/converger/llm"
)

// turnWire is a turn reply as the model writes it (see turnSchemaJSON). Pointers tell a
// missing field from a zero one.
type turnWire struct {
	Proposal    *string  `json:"proposal"`
	Agreement   *float64 `json:"agreement"`
	OpenIssues  []string `json:"open_issues"`
	Concessions []string `json:"concessions"`
	Confidence  *float64 `json:"confidence"`
}

// parseReply reads a turn reply. It accepts the JSON object alone or wrapped in a code fence
// or prose, ratings given as fractions of one (0.85) or out of range (clamped to 0-100), and
// missing lists; it rejects anything without a proposal or an agreement rating, so a reply
// that says nothing usable never counts as agreement.
func parseReply(content string) (Reply, error) {
	var w turnWire
	if err := decodeObject(content, &w); err != nil {
		return Reply{}, err
	}
	if w.Proposal == nil || strings.TrimSpace(*w.Proposal) == "" {
		return Reply{}, errors.New(`the reply has no "proposal"`)
	}
	if w.Agreement == nil || math.IsNaN(*w.Agreement) {
		return Reply{}, errors.New(`the reply has no "agreement" rating`)
	}
	r := Reply{
		Proposal:    strings.TrimSpace(*w.Proposal),
		Agreement:   rating(*w.Agreement),
		OpenIssues:  nonEmpty(w.OpenIssues),
		Concessions: nonEmpty(w.Concessions),
	}
	if w.Confidence != nil && !math.IsNaN(*w.Confidence) {
		r.Confidence = rating(*w.Confidence)
	}
	return r, nil
}

// parseSynthesis reads a synthesis reply.
func parseSynthesis(content string) (string, error) {
	var w struct {
		Output *string `json:"output"`
	}
	if err := decodeObject(content, &w); err != nil {
		return "", err
	}
	if w.Output == nil || strings.TrimSpace(*w.Output) == "" {
		return "", errors.New(`the reply has no "output"`)
	}
	return strings.TrimSpace(*w.Output), nil
}

// decodeObject decodes the JSON object in content into v. Content that is exactly one object,
// the common case, is decoded in one pass; anything else is first cut out of its code fence
// or prose by llm.ExtractJSON.
func decodeObject(content string, v any) error {
	s := strings.TrimSpace(content)
	if len(s) >= 2 && s[0] == '{' && s[len(s)-1] == '}' {
		err := json.Unmarshal([]byte(s), v)
		var syntax *json.SyntaxError
		if !errors.As(err, &syntax) {
			if err != nil {
				return fmt.Errorf("the reply does not match the schema: %w", err)
			}
			return nil
		}
	}
	object, ok := llm.ExtractJSON(content)
	if !ok {
		return errors.New("the reply is not a JSON object")
	}
	if err := json.Unmarshal([]byte(object), v); err != nil {
		return fmt.Errorf("the reply does not match the schema: %w", err)
	}
	return nil
}

// rating maps a 0-100 rating (or a 0-1 fraction) to an integer from 0 to 100.
func rating(x float64) int {
	if x > 0 && x < 1 {
		x *= 100
	}
	return clamp(int(math.Round(x)), 0, 100)
}

func nonEmpty(items []string) []string {
	out := make([]string, 0, len(items))
	for _, s := range items {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}
