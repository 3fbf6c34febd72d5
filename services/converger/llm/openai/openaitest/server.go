// Package openaitest is an httptest server that speaks OpenAI's Chat Completions wire
// protocol, for testing code that uses the openai provider without a network. Each request is
// decoded, handed to a [Script] that decides the answer, and answered in the real response or
// error format; the server records what it received and the usage it reported.
package openaitest

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

// Usage is the usage object of a completion.
type Usage struct {
	PromptTokens, CompletionTokens, CachedTokens int64
}

// Answer is what the server sends back for one request.
type Answer struct {
	// Status is the HTTP status; 0 means 200.
	Status int
	// Header is added to the answer (Retry-After, retry-after-ms, ...).
	Header map[string]string
	// RawBody, when set, is sent as the body verbatim, for malformed answers.
	RawBody string
	// Content is the assistant message of a 200 answer.
	Content string
	// Refusal is the assistant's refusal of a 200 answer.
	Refusal string
	// ErrorMessage and ErrorParam fill the error body of a non-200 answer.
	ErrorMessage, ErrorParam string
	// Usage is reported in a 200 answer.
	Usage Usage
}

// Request is a request as the server received it.
type Request struct {
	// LLM is the request translated back: model, system prompt, messages, max tokens and, for
	// json_schema, the schema.
	LLM llm.Request
	// ResponseFormat is the response_format type sent: "", "json_schema" or "json_object".
	ResponseFormat string
	// Strict is json_schema.strict.
	Strict bool
	// Header holds the request headers.
	Header http.Header
	// Body is the raw request body.
	Body []byte
}

// Script answers the n-th request (from 1); ctx is the HTTP request's.
type Script func(ctx context.Context, n int, req Request) Answer

// Server is the fake Chat Completions server. Its URL + "/v1" is the provider's BaseURL.
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

// BaseURL is the URL to configure the provider with.
func (s *Server) BaseURL() string { return s.URL + "/v1" }

// Requests returns the requests received so far.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.requests...)
}

// Reported is the sum of the usage in every well-formed 200 answer sent, mapped the way the
// llm package documents: what a client that counts exactly must have recorded.
func (s *Server) Reported() llm.Usage {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reported
}

type wireRequest struct {
	Model    string `json:"model"`
	Messages []struct {
		Role    string          `json:"role"`
		Content json.RawMessage `json:"content"`
	} `json:"messages"`
	MaxTokens           int64 `json:"max_tokens"`
	MaxCompletionTokens int64 `json:"max_completion_tokens"`
	ResponseFormat      *struct {
		Type       string `json:"type"`
		JSONSchema *struct {
			Name        string          `json:"name"`
			Description string          `json:"description"`
			Strict      bool            `json:"strict"`
			Schema      json.RawMessage `json:"schema"`
		} `json:"json_schema"`
	} `json:"response_format"`
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != "/v1/chat/completions" {
		http.Error(w, `{"error":{"message":"not found","type":"invalid_request_error"}}`, http.StatusNotFound)
		return
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var wire wireRequest
	if err := json.Unmarshal(body, &wire); err != nil {
		writeError(w, http.StatusBadRequest, "invalid JSON body: "+err.Error(), "")
		return
	}
	req := Request{Header: r.Header.Clone(), Body: body}
	req.LLM.Model = wire.Model
	req.LLM.MaxTokens = max(wire.MaxTokens, wire.MaxCompletionTokens)
	for _, m := range wire.Messages {
		var text string
		if err := json.Unmarshal(m.Content, &text); err != nil {
			var parts []struct {
				Text string `json:"text"`
			}
			_ = json.Unmarshal(m.Content, &parts)
			for _, p := range parts {
				text += p.Text
			}
		}
		switch m.Role {
		case "system", "developer":
			req.LLM.System = text
		case "assistant":
			req.LLM.Messages = append(req.LLM.Messages, llm.Message{Role: llm.RoleAssistant, Content: text})
		default:
			req.LLM.Messages = append(req.LLM.Messages, llm.Message{Role: llm.RoleUser, Content: text})
		}
	}
	if f := wire.ResponseFormat; f != nil {
		req.ResponseFormat = f.Type
		if f.JSONSchema != nil {
			req.Strict = f.JSONSchema.Strict
			req.LLM.Schema = &llm.Schema{Name: f.JSONSchema.Name, Description: f.JSONSchema.Description, JSON: f.JSONSchema.Schema}
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
	w.Header().Set("Content-Type", "application/json")
	status := a.Status
	if status == 0 {
		status = http.StatusOK
	}
	switch {
	case a.RawBody != "":
		w.WriteHeader(status)
		_, _ = io.WriteString(w, a.RawBody)
	case status != http.StatusOK:
		msg := a.ErrorMessage
		if msg == "" {
			msg = http.StatusText(status)
		}
		writeError(w, status, msg, a.ErrorParam)
	default:
		model := wire.Model
		if model == "" {
			model = "gpt-test"
		}
		var refusal any
		if a.Refusal != "" {
			refusal = a.Refusal
		}
		u := a.Usage
		resp := map[string]any{
			"id": fmt.Sprintf("chatcmpl-%d", n), "object": "chat.completion", "created": 1700000000, "model": model,
			"choices": []any{map[string]any{
				"index": 0, "finish_reason": "stop", "logprobs": nil,
				"message": map[string]any{"role": "assistant", "content": a.Content, "refusal": refusal},
			}},
			"usage": map[string]any{
				"prompt_tokens": u.PromptTokens, "completion_tokens": u.CompletionTokens,
				"total_tokens":              u.PromptTokens + u.CompletionTokens,
				"prompt_tokens_details":     map[string]any{"cached_tokens": u.CachedTokens, "audio_tokens": 0},
				"completion_tokens_details": map[string]any{"reasoning_tokens": 0},
			},
		}
		s.mu.Lock()
		s.reported = s.reported.Add(llm.Usage{InputTokens: u.PromptTokens, OutputTokens: u.CompletionTokens, CachedTokens: u.CachedTokens})
		s.mu.Unlock()
		w.WriteHeader(http.StatusOK)
		_ = json.NewEncoder(w).Encode(resp)
	}
}

func writeError(w http.ResponseWriter, status int, msg, param string) {
	typ := "invalid_request_error"
	switch {
	case status == http.StatusTooManyRequests:
		typ = "rate_limit_exceeded"
	case status >= 500:
		typ = "server_error"
	}
	var p any
	if param != "" {
		p = param
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"error": map[string]any{"message": msg, "type": typ, "param": p, "code": nil}})
}

// Simulate answers a request with what p answers for it, with usage from p's counts (a
// quarter of the prompt reported as cached when cached is true), so a fake server can play a
// whole convergence discussion.
func Simulate(p llm.Provider, cached bool) func(ctx context.Context, req Request) Answer {
	return func(ctx context.Context, req Request) Answer {
		resp, err := p.Complete(ctx, req.LLM)
		if err != nil {
			return Answer{Status: http.StatusInternalServerError, ErrorMessage: strings.ReplaceAll(err.Error(), "\n", " ")}
		}
		u := Usage{PromptTokens: resp.Usage.InputTokens, CompletionTokens: resp.Usage.OutputTokens}
		if cached {
			u.CachedTokens = u.PromptTokens / 4
		}
		return Answer{Content: resp.Content, Usage: u}
	}
}
