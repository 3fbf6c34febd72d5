// Package anthropictest is an httptest server that speaks Anthropic's Messages wire
// protocol, for testing code that uses the anthropic provider without a network. Each request
// is decoded, handed to a [Script] that decides the answer, and answered in the real response
// or error format; the server records what it received and the usage it reported.
package anthropictest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/convergence-dev/convergence/services/converger/llm"
)

// Usage is the usage object of a message.
type Usage struct {
	InputTokens, OutputTokens, CacheCreationInputTokens, CacheReadInputTokens int64
}

// Answer is what the server sends back for one request.
type Answer struct {
	// Status is the HTTP status; 0 means 200.
	Status int
	// Header is added to the answer (Retry-After, ...).
	Header map[string]string
	// RawBody, when set, is sent as the body verbatim, for malformed answers.
	RawBody string
	// ToolInput, when set, is answered as a tool_use block calling the forced tool with this
	// JSON as its input.
	ToolInput string
	// Text, when set, is answered as a text block (before the tool call, if any).
	Text string
	// ErrorType and ErrorMessage fill the error body of a non-200 answer.
	ErrorType, ErrorMessage string
	// Usage is reported in a 200 answer.
	Usage Usage
}

// Request is a request as the server received it.
type Request struct {
	// LLM is the request translated back: model, system prompt, messages, max tokens and, when
	// a tool was forced, the schema (its name and input schema).
	LLM llm.Request
	// ToolChoiceType and ToolChoiceName are the tool_choice sent.
	ToolChoiceType, ToolChoiceName string
	// CacheControl counts the blocks marked with cache_control.
	CacheControl int
	// Header holds the request headers.
	Header http.Header
	// Body is the raw request body.
	Body []byte
}

// Script answers the n-th request (from 1); ctx is the HTTP request's.
type Script func(ctx context.Context, n int, req Request) Answer

// Server is the fake Messages server. Its URL is the provider's BaseURL.
type Server struct {
	*httptest.Server
	script Script

	mu       sync.Mutex
	requests []Request
	reported llm.Usage
}

// NewServer starts a server answering with script; it is closed when t's test ends.
func NewServer(t testing.TB, script Script) *Server {
	s := &Server{script: script}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.Close)
	return s
}

// Requests returns the requests received so far.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.requests...)
}

// Reported is the sum of the usage in every well-formed 200 answer sent, mapped the way the
// llm package documents (input includes cache reads and writes): what a client that counts
// exactly must have recorded.
func (s *Server) Reported() llm.Usage {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reported
}

type block struct {
	Type         string          `json:"type"`
	Text         string          `json:"text"`
	CacheControl json.RawMessage `json:"cache_control"`
}

type wireRequest struct {
	Model     string  `json:"model"`
	MaxTokens int64   `json:"max_tokens"`
	System    []block `json:"system"`
	Messages  []struct {
		Role    string  `json:"role"`
		Content []block `json:"content"`
	} `json:"messages"`
	Tools []struct {
		Name        string          `json:"name"`
		Description string          `json:"description"`
		InputSchema json.RawMessage `json:"input_schema"`
	} `json:"tools"`
	ToolChoice *struct {
		Type string `json:"type"`
		Name string `json:"name"`
	} `json:"tool_choice"`
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != "/v1/messages" {
		writeError(w, http.StatusNotFound, "not_found_error", "not found")
		return
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		writeError(w, http.StatusBadRequest, "invalid_request_error", err.Error())
		return
	}
	var wire wireRequest
	if err := json.Unmarshal(body, &wire); err != nil {
		writeError(w, http.StatusBadRequest, "invalid_request_error", "invalid JSON body: "+err.Error())
		return
	}
	req := Request{Header: r.Header.Clone(), Body: body}
	req.LLM.Model, req.LLM.MaxTokens = wire.Model, wire.MaxTokens
	var sys strings.Builder
	for _, b := range wire.System {
		sys.WriteString(b.Text)
		if len(b.CacheControl) > 0 {
			req.CacheControl++
		}
	}
	req.LLM.System = sys.String()
	for _, m := range wire.Messages {
		var text strings.Builder
		for _, b := range m.Content {
			text.WriteString(b.Text)
			if len(b.CacheControl) > 0 {
				req.CacheControl++
			}
		}
		role := llm.RoleUser
		if m.Role == "assistant" {
			role = llm.RoleAssistant
		}
		req.LLM.Messages = append(req.LLM.Messages, llm.Message{Role: role, Content: text.String()})
	}
	if tc := wire.ToolChoice; tc != nil {
		req.ToolChoiceType, req.ToolChoiceName = tc.Type, tc.Name
		for _, tool := range wire.Tools {
			if tool.Name == tc.Name {
				req.LLM.Schema = &llm.Schema{Name: tool.Name, Description: tool.Description, JSON: tool.InputSchema}
			}
		}
	}

	s.mu.Lock()
	s.requests = append(s.requests, req)
	n := len(s.requests)
	s.mu.Unlock()

	a := s.script(r.Context(), n, req)
	for k, v := range a.Header {
		w.Header().Set(k, v)
	}
	status := a.Status
	if status == 0 {
		status = http.StatusOK
	}
	switch {
	case a.RawBody != "":
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = io.WriteString(w, a.RawBody)
	case status != http.StatusOK:
		typ, msg := a.ErrorType, a.ErrorMessage
		if typ == "" {
			typ = errorType(status)
		}
		if msg == "" {
			msg = http.StatusText(status)
		}
		writeError(w, status, typ, msg)
	default:
		content := []any{}
		stop := "end_turn"
		if a.Text != "" {
			content = append(content, map[string]any{"type": "text", "text": a.Text})
		}
		if a.ToolInput != "" {
			content = append(content, map[string]any{
				"type": "tool_use", "id": fmt.Sprintf("toolu_%d", n), "name": req.ToolChoiceName,
				"input": json.RawMessage(a.ToolInput),
			})
			stop = "tool_use"
		}
		u := a.Usage
		resp := map[string]any{
			"id": fmt.Sprintf("msg_%d", n), "type": "message", "role": "assistant", "model": wire.Model,
			"content": content, "stop_reason": stop, "stop_sequence": nil,
			"usage": map[string]any{
				"input_tokens": u.InputTokens, "output_tokens": u.OutputTokens,
				"cache_creation_input_tokens": u.CacheCreationInputTokens,
				"cache_read_input_tokens":     u.CacheReadInputTokens,
			},
		}
		s.mu.Lock()
		s.reported = s.reported.Add(llm.Usage{
			InputTokens:         u.InputTokens + u.CacheCreationInputTokens + u.CacheReadInputTokens,
			OutputTokens:        u.OutputTokens,
			CachedTokens:        u.CacheReadInputTokens,
			CacheCreationTokens: u.CacheCreationInputTokens,
		})
		s.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		_ = json.NewEncoder(w).Encode(resp)
	}
}

func errorType(status int) string {
	switch {
	case status == http.StatusTooManyRequests:
		return "rate_limit_error"
	case status == 529:
		return "overloaded_error"
	case status >= 500:
		return "api_error"
	case status == http.StatusUnauthorized:
		return "authentication_error"
	default:
		return "invalid_request_error"
	}
}

func writeError(w http.ResponseWriter, status int, typ, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"type": "error", "error": map[string]any{"type": typ, "message": msg}})
}

// Simulate answers a request with what p answers for it, as a forced tool call, with usage
// from p's counts split the way Anthropic reports a cached prompt when cached is true (half
// read from the cache, a tenth written to it, the rest in input_tokens), so a fake server can
// play a whole convergence discussion.
func Simulate(p llm.Provider, cached bool) func(ctx context.Context, req Request) Answer {
	return func(ctx context.Context, req Request) Answer {
		resp, err := p.Complete(ctx, req.LLM)
		if err != nil {
			return Answer{Status: http.StatusInternalServerError, ErrorMessage: err.Error()}
		}
		u := Usage{InputTokens: resp.Usage.InputTokens, OutputTokens: resp.Usage.OutputTokens}
		if cached {
			u.CacheReadInputTokens = u.InputTokens / 2
			u.CacheCreationInputTokens = u.InputTokens / 10
			u.InputTokens -= u.CacheReadInputTokens + u.CacheCreationInputTokens
		}
		return Answer{ToolInput: resp.Content, Usage: u}
	}
}
