// Package anthropic is the [llm.Provider] for Anthropic's Messages API, through
// github.com/anthropics/anthropic-sdk-go.
//
// Structured output uses forced tool use: the request declares one tool whose input schema
// is the requested JSON schema and sets tool_choice {"type": "tool", "name": ...}, so the model
// must answer by calling it; the tool call's input is the JSON object returned as
// Response.Content.
package anthropic

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"

	"github.com/anthropics/anthropic-sdk-go/v2"
	"github.com/anthropics/anthropic-sdk-go/v2/option"

	"github.com/convergence-dev/convergence/services/converger/llm"
)

// DefaultBaseURL is Anthropic's API.
const DefaultBaseURL = "https://api.anthropic.com"

// DefaultMaxTokens is sent when a Request sets no MaxTokens; the Messages API requires one.
const DefaultMaxTokens = 2048

// Config configures a [Provider]. Only the caller's values are used: nothing is read from
// ANTHROPIC_* environment variables or credential profiles.
type Config struct {
	// Name is reported by Provider.Name; default "anthropic".
	Name string
	// BaseURL is the API root without /v1; default DefaultBaseURL.
	BaseURL string
	// APIKey authenticates the requests.
	APIKey string
	// Model is used when a Request names none.
	Model string
	// PromptCaching marks the system prompt and the conversation so far as cacheable
	// (cache_control ephemeral), so each agent's growing transcript is read from the cache on
	// its next turn. Reads and writes show up in Usage.CachedTokens and
	// Usage.CacheCreationTokens.
	PromptCaching bool
	// HTTPClient makes the requests; default a new http.Client.
	HTTPClient *http.Client
}

// Provider calls the Messages API. It is safe for concurrent use and keeps no state.
type Provider struct {
	name    string
	model   string
	caching bool
	svc     anthropic.MessageService
	log     *slog.Logger
}

// New builds a Provider from cfg. It starts nothing and makes no request.
func New(cfg Config, logger *slog.Logger) (*Provider, error) {
	if cfg.Name == "" {
		cfg.Name = "anthropic"
	}
	if cfg.BaseURL == "" {
		cfg.BaseURL = DefaultBaseURL
	}
	if !strings.HasPrefix(cfg.BaseURL, "http://") && !strings.HasPrefix(cfg.BaseURL, "https://") {
		return nil, fmt.Errorf("anthropic base url %q: want an http or https URL", cfg.BaseURL)
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{}
	}
	client := anthropic.NewClient(
		option.WithoutEnvironmentDefaults(),
		option.WithBaseURL(cfg.BaseURL),
		option.WithAPIKey(cfg.APIKey),
		option.WithHTTPClient(cfg.HTTPClient),
		option.WithMaxRetries(0), // llm.Retrying is the only retry loop, so counts stay exact.
	)
	return &Provider{
		name:    cfg.Name,
		model:   cfg.Model,
		caching: cfg.PromptCaching,
		svc:     client.Messages,
		log:     logger.With("component", "llm.anthropic", "provider", cfg.Name),
	}, nil
}

// Name returns the configured name.
func (p *Provider) Name() string { return p.name }

// Complete makes one Messages call. It does not retry; see [llm.Retrying].
func (p *Provider) Complete(ctx context.Context, req llm.Request) (llm.Response, error) {
	model := req.Model
	if model == "" {
		model = p.model
	}
	if model == "" {
		return llm.Response{}, &llm.Error{Kind: llm.ErrPermanent, Provider: p.name, Err: errors.New("no model: set Request.Model or Config.Model")}
	}
	params, err := p.params(model, req)
	if err != nil {
		return llm.Response{}, &llm.Error{Kind: llm.ErrPermanent, Provider: p.name, Err: err}
	}
	var httpResp *http.Response
	msg, err := p.svc.New(ctx, params, option.WithResponseInto(&httpResp))
	if err != nil {
		return llm.Response{}, p.classify(ctx, httpResp, err)
	}
	u := msg.Usage
	usage := llm.Usage{
		// Anthropic's input_tokens excludes cache reads and writes; InputTokens includes them.
		InputTokens:         u.InputTokens + u.CacheReadInputTokens + u.CacheCreationInputTokens,
		OutputTokens:        u.OutputTokens,
		CachedTokens:        u.CacheReadInputTokens,
		CacheCreationTokens: u.CacheCreationInputTokens,
	}
	resp := llm.Response{Model: msg.Model, Usage: usage, Attempts: 1}
	if req.Schema == nil {
		var text strings.Builder
		for _, block := range msg.Content {
			if block.Type == "text" {
				text.WriteString(block.Text)
			}
		}
		resp.Content = text.String()
		return resp, nil
	}
	for _, block := range msg.Content {
		if block.Type != "tool_use" || block.Name != req.Schema.Name {
			continue
		}
		object, ok := llm.ExtractJSON(string(block.Input))
		if !ok {
			return resp, p.bad(usage, fmt.Errorf("tool input is not a JSON object (stop_reason %q)", msg.StopReason))
		}
		resp.Content = object
		return resp, nil
	}
	p.log.LogAttrs(ctx, slog.LevelWarn, "reply without the forced tool call",
		slog.String("tool", req.Schema.Name), slog.String("stop_reason", string(msg.StopReason)))
	return resp, p.bad(usage, fmt.Errorf("no %s tool call in reply (stop_reason %q)", req.Schema.Name, msg.StopReason))
}

func (p *Provider) params(model string, req llm.Request) (anthropic.MessageNewParams, error) {
	maxTokens := req.MaxTokens
	if maxTokens <= 0 {
		maxTokens = DefaultMaxTokens
	}
	params := anthropic.MessageNewParams{
		Model:     model,
		MaxTokens: maxTokens,
		Messages:  make([]anthropic.MessageParam, 0, len(req.Messages)),
	}
	if req.System != "" {
		system := anthropic.TextBlockParam{Text: req.System}
		if p.caching {
			system.CacheControl = anthropic.NewCacheControlEphemeralParam()
		}
		params.System = []anthropic.TextBlockParam{system}
	}
	for i, m := range req.Messages {
		block := anthropic.NewTextBlock(m.Content)
		if p.caching && i == len(req.Messages)-1 {
			block.OfText.CacheControl = anthropic.NewCacheControlEphemeralParam()
		}
		if m.Role == llm.RoleAssistant {
			params.Messages = append(params.Messages, anthropic.NewAssistantMessage(block))
		} else {
			params.Messages = append(params.Messages, anthropic.NewUserMessage(block))
		}
	}
	if req.Schema == nil {
		return params, nil
	}
	var schema struct {
		Properties map[string]json.RawMessage `json:"properties"`
		Required   []string                   `json:"required"`
	}
	if err := json.Unmarshal(req.Schema.JSON, &schema); err != nil {
		return params, fmt.Errorf("decode schema %s: %w", req.Schema.Name, err)
	}
	var extra map[string]any
	if err := json.Unmarshal(req.Schema.JSON, &extra); err != nil {
		return params, fmt.Errorf("decode schema %s: %w", req.Schema.Name, err)
	}
	delete(extra, "type")
	delete(extra, "properties")
	delete(extra, "required")
	tool := anthropic.ToolParam{
		Name: req.Schema.Name,
		InputSchema: anthropic.ToolInputSchemaParam{
			Properties:  schema.Properties,
			Required:    schema.Required,
			ExtraFields: extra,
		},
	}
	if req.Schema.Description != "" {
		tool.Description = anthropic.String(req.Schema.Description)
	}
	params.Tools = []anthropic.ToolUnionParam{{OfTool: &tool}}
	params.ToolChoice = anthropic.ToolChoiceUnionParam{OfTool: &anthropic.ToolChoiceToolParam{
		Name:                   req.Schema.Name,
		DisableParallelToolUse: anthropic.Bool(true),
	}}
	return params, nil
}

// classify turns an SDK error into an [*llm.Error]. Anthropic's 529 "overloaded" is a 5xx and
// so a retryable server error.
func (p *Provider) classify(ctx context.Context, httpResp *http.Response, err error) error {
	return llm.Classify(ctx, p.name, httpResp, err, func(err error) (llm.APIFailure, bool) {
		var apiErr *anthropic.Error
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
