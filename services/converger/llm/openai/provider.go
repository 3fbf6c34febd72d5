// Package openai is the [llm.Provider] for OpenAI's Chat Completions API and the servers that
// speak it (Ollama, vLLM, llama.cpp, LM Studio, ...), through github.com/openai/openai-go.
//
// Structured output uses response_format json_schema (strict). A server that rejects it with
// a 400 or 422 is asked again at once with response_format json_object and the schema
// written into the system prompt; a model for which that fallback worked keeps using it for
// the life of the Provider, so the rejected request is not repeated on every call.
package openai

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/shared"

	"github.com/convergence-dev/convergence/services/converger/llm"
)

// DefaultBaseURL is OpenAI's API.
const DefaultBaseURL = "https://api.openai.com/v1"

// Config configures a [Provider]. Only the caller's values are used: unlike the SDK's own
// client constructor, nothing is read from OPENAI_* environment variables.
type Config struct {
	// Name is reported by Provider.Name; default "openai". Name a local server ("ollama")
	// so usage records say where tokens were spent.
	Name string
	// BaseURL is the API root including /v1; default DefaultBaseURL. For Ollama use
	// http://host:11434/v1, for vLLM and llama.cpp http://host:8000/v1.
	BaseURL string
	// APIKey is sent as a bearer token; local servers usually accept any value.
	APIKey string
	// Model is used when a Request names none.
	Model string
	// UseMaxTokens sends the older max_tokens field instead of max_completion_tokens, for
	// servers that predate it.
	UseMaxTokens bool
	// HTTPClient makes the requests; default a new http.Client. Its timeout, if any, applies
	// per attempt on top of the caller's context.
	HTTPClient *http.Client
}

// Provider calls Chat Completions. It is safe for concurrent use; the only state it keeps is
// which models needed the json_object fallback.
type Provider struct {
	name         string
	model        string
	useMaxTokens bool
	svc          openai.ChatCompletionService
	log          *slog.Logger
	// jsonObjectOnly holds the models (string keys) whose server rejected json_schema.
	jsonObjectOnly sync.Map
}

// New builds a Provider from cfg. It starts nothing and makes no request.
func New(cfg Config, logger *slog.Logger) (*Provider, error) {
	if cfg.Name == "" {
		cfg.Name = "openai"
	}
	if cfg.BaseURL == "" {
		cfg.BaseURL = DefaultBaseURL
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{}
	}
	if !strings.HasPrefix(cfg.BaseURL, "http://") && !strings.HasPrefix(cfg.BaseURL, "https://") {
		return nil, fmt.Errorf("openai base url %q: want an http or https URL", cfg.BaseURL)
	}
	opts := []option.RequestOption{
		option.WithBaseURL(cfg.BaseURL),
		option.WithHTTPClient(cfg.HTTPClient),
		option.WithMaxRetries(0), // llm.Retrying is the only retry loop, so counts stay exact.
	}
	if cfg.APIKey != "" {
		opts = append(opts, option.WithAPIKey(cfg.APIKey))
	}
	return &Provider{
		name:         cfg.Name,
		model:        cfg.Model,
		useMaxTokens: cfg.UseMaxTokens,
		svc:          openai.NewChatCompletionService(opts...),
		log:          logger.With("component", "llm.openai", "provider", cfg.Name),
	}, nil
}

// Name returns the configured name.
func (p *Provider) Name() string { return p.name }

// Complete makes one Chat Completions call, plus one json_object call when the server rejects
// json_schema. It does not retry; see [llm.Retrying].
func (p *Provider) Complete(ctx context.Context, req llm.Request) (llm.Response, error) {
	model := req.Model
	if model == "" {
		model = p.model
	}
	if model == "" {
		return llm.Response{}, &llm.Error{Kind: llm.ErrPermanent, Provider: p.name, Err: errors.New("no model: set Request.Model or Config.Model")}
	}
	if req.Schema == nil {
		return p.call(ctx, model, req, formatNone)
	}
	if _, ok := p.jsonObjectOnly.Load(model); ok {
		return p.call(ctx, model, req, formatJSONObject)
	}
	resp, err := p.call(ctx, model, req, formatJSONSchema)
	var perr *llm.Error
	if err == nil || !errors.As(err, &perr) || (perr.StatusCode != http.StatusBadRequest && perr.StatusCode != http.StatusUnprocessableEntity) {
		return resp, err
	}
	resp, err = p.call(ctx, model, req, formatJSONObject)
	resp.Attempts++
	if err != nil {
		return resp, fmt.Errorf("json_object fallback after json_schema was rejected: %w", err)
	}
	if _, loaded := p.jsonObjectOnly.LoadOrStore(model, true); !loaded {
		p.log.LogAttrs(ctx, slog.LevelWarn, "server rejected json_schema; using json_object for this model",
			slog.String("model", model), slog.Int("status", perr.StatusCode))
	}
	return resp, nil
}

type format int

const (
	formatNone format = iota
	formatJSONSchema
	formatJSONObject
)

func (p *Provider) call(ctx context.Context, model string, req llm.Request, f format) (llm.Response, error) {
	params := p.params(model, req, f)
	var httpResp *http.Response
	completion, err := p.svc.New(ctx, params, option.WithResponseInto(&httpResp))
	if err != nil {
		return llm.Response{}, p.classify(ctx, httpResp, err)
	}
	usage := llm.Usage{
		InputTokens:  completion.Usage.PromptTokens,
		OutputTokens: completion.Usage.CompletionTokens,
		CachedTokens: completion.Usage.PromptTokensDetails.CachedTokens,
	}
	resp := llm.Response{Model: completion.Model, Usage: usage, Attempts: 1}
	if len(completion.Choices) == 0 {
		return resp, p.bad(usage, errors.New("no choices in completion"))
	}
	msg := completion.Choices[0].Message
	if msg.Refusal != "" {
		return resp, p.bad(usage, fmt.Errorf("model refused: %.200s", msg.Refusal))
	}
	resp.Content = msg.Content
	if f == formatNone {
		return resp, nil
	}
	object, ok := llm.ExtractJSON(msg.Content)
	if !ok {
		return resp, p.bad(usage, fmt.Errorf("content is not a JSON object (finish_reason %q): %.120q", completion.Choices[0].FinishReason, msg.Content))
	}
	resp.Content = object
	return resp, nil
}

func (p *Provider) params(model string, req llm.Request, f format) openai.ChatCompletionNewParams {
	system := req.System
	if f == formatJSONObject {
		// json_object mode needs the word JSON in the prompt and gets no schema, so the schema
		// travels as instructions.
		system = strings.TrimSpace(system + "\n\nReply with a single JSON object, and nothing else, that conforms to this JSON Schema:\n" + string(req.Schema.JSON))
	}
	msgs := make([]openai.ChatCompletionMessageParamUnion, 0, len(req.Messages)+1)
	if system != "" {
		msgs = append(msgs, openai.SystemMessage(system))
	}
	for _, m := range req.Messages {
		if m.Role == llm.RoleAssistant {
			msgs = append(msgs, openai.AssistantMessage(m.Content))
		} else {
			msgs = append(msgs, openai.UserMessage(m.Content))
		}
	}
	params := openai.ChatCompletionNewParams{Model: shared.ChatModel(model), Messages: msgs}
	if req.MaxTokens > 0 {
		if p.useMaxTokens {
			params.MaxTokens = openai.Int(req.MaxTokens)
		} else {
			params.MaxCompletionTokens = openai.Int(req.MaxTokens)
		}
	}
	switch f {
	case formatJSONSchema:
		js := shared.ResponseFormatJSONSchemaJSONSchemaParam{
			Name:   req.Schema.Name,
			Strict: openai.Bool(true),
			Schema: json.RawMessage(req.Schema.JSON),
		}
		if req.Schema.Description != "" {
			js.Description = openai.String(req.Schema.Description)
		}
		params.ResponseFormat = openai.ChatCompletionNewParamsResponseFormatUnion{
			OfJSONSchema: &shared.ResponseFormatJSONSchemaParam{JSONSchema: js},
		}
	case formatJSONObject:
		params.ResponseFormat = openai.ChatCompletionNewParamsResponseFormatUnion{
			OfJSONObject: &shared.ResponseFormatJSONObjectParam{},
		}
	}
	return params
}

// classify turns an SDK error into an [*llm.Error].
func (p *Provider) classify(ctx context.Context, httpResp *http.Response, err error) error {
	return llm.Classify(ctx, p.name, httpResp, err, func(err error) (llm.APIFailure, bool) {
		var apiErr *openai.Error
		if !errors.As(err, &apiErr) {
			return llm.APIFailure{}, false
		}
		f := llm.APIFailure{Status: apiErr.StatusCode, Message: apiErr.Message}
		if apiErr.Response != nil {
			f.Header = apiErr.Response.Header
		}
		return f, true
	})
}

func (p *Provider) bad(usage llm.Usage, err error) *llm.Error {
	return &llm.Error{Kind: llm.ErrBadResponse, Provider: p.name, Usage: usage, Err: err}
}
