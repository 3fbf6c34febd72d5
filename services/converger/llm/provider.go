package llm

import (
	"context"
	"encoding/json"
)

// Provider completes one request against a language model.
//
// Complete blocks until the model answers, ctx is done, or the call fails. It makes one
// logical call and does not retry rate limits or server errors itself; wrap it in [Retrying]
// for that. Failures are returned as [*Error] (match them with errors.Is against
// [ErrRateLimited], [ErrServer], [ErrTimeout], [ErrBadResponse] and [ErrPermanent]), except
// that when ctx is done the ctx error is returned, wrapped. Implementations are safe for
// concurrent use.
type Provider interface {
	// Name identifies the provider in logs, metrics and usage records ("openai", "anthropic",
	// "simulated", or a configured name such as "ollama").
	Name() string
	// Complete sends req and returns the model's reply.
	Complete(ctx context.Context, req Request) (Response, error)
}

// Role says who wrote a message in a conversation.
type Role string

// The two conversational roles. The system prompt travels separately in [Request.System].
const (
	RoleUser      Role = "user"
	RoleAssistant Role = "assistant"
)

// Message is one entry of the conversation sent to the model.
type Message struct {
	Role    Role   `json:"role"`
	Content string `json:"content"`
}

// Schema asks the model for structured output: a JSON object that conforms to JSON.
//
// Name is the identifier providers need for it (OpenAI's json_schema name, Anthropic's tool
// name): letters, digits, '_' and '-', at most 64 characters. JSON is a JSON Schema object of
// type "object" whose properties are all listed in "required" and which sets
// "additionalProperties": false, the subset that every provider's strict mode accepts.
type Schema struct {
	Name        string          `json:"name"`
	Description string          `json:"description"`
	JSON        json.RawMessage `json:"schema"`
}

// Request is one call to a model.
type Request struct {
	// Model names the model; empty means the provider's configured default.
	Model string `json:"model"`
	// System is the system prompt.
	System string `json:"system"`
	// Messages is the conversation, oldest first. It starts and ends with a user message and
	// alternates roles, which every provider accepts.
	Messages []Message `json:"messages"`
	// Schema, when set, asks for structured output; Response.Content is then a JSON object.
	Schema *Schema `json:"schema,omitempty"`
	// MaxTokens caps the generated tokens; zero means the provider's default.
	MaxTokens int64 `json:"maxTokens"`
}

// Response is the model's reply to one [Request].
type Response struct {
	// Content is the reply. When the request carried a Schema it is a single JSON object,
	// already cut out of any code fence or prose around it; a reply that is not valid JSON is
	// reported as [ErrBadResponse] instead.
	Content string `json:"content"`
	// Model is the model that answered, as the provider reports it.
	Model string `json:"model"`
	// Usage is the tokens billed for the call that produced Content. Attempts that failed
	// with a rate limit or server error are not billed and not included.
	Usage Usage `json:"usage"`
	// Attempts counts the HTTP requests made for this response: 1 normally, more when
	// [Retrying] retried or a provider fell back to a simpler request format.
	Attempts int `json:"attempts"`
}
