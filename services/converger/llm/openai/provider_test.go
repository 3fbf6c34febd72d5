package openai_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/convergence-dev/convergence/services/converger/llm"
	"github.com/convergence-dev/convergence/services/converger/llm/openai"
	"github.com/convergence-dev/convergence/services/converger/llm/openai/openaitest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const turnSchema = `{"type":"object","properties":{"proposal":{"type":"string"},"agreement":{"type":"integer"}},"required":["proposal","agreement"],"additionalProperties":false}`

const turnJSON = `{"proposal":"Cache per tenant.","agreement":80}`

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

func request() llm.Request {
	return llm.Request{
		System:    "You are a reviewer.",
		Messages:  []llm.Message{{Role: llm.RoleUser, Content: "Task"}, {Role: llm.RoleAssistant, Content: turnJSON}, {Role: llm.RoleUser, Content: "Reply"}},
		Schema:    &llm.Schema{Name: "convergence_turn", Description: "One turn.", JSON: json.RawMessage(turnSchema)},
		MaxTokens: 512,
	}
}

func newProvider(t *testing.T, srv *openaitest.Server) *openai.Provider {
	t.Helper()
	p, err := openai.New(openai.Config{BaseURL: srv.BaseURL(), APIKey: "sk-test", Model: "gpt-test", HTTPClient: srv.Client()}, discard())
	require.NoError(t, err)
	return p
}

func retrying(p llm.Provider) *llm.Retrying {
	return llm.NewRetrying(p, llm.RetryPolicy{MaxAttempts: 3, BaseDelay: time.Millisecond, MaxDelay: 5 * time.Millisecond}, discard())
}

func TestComplete_JSONSchemaWithCachedTokens_ExactUsage(t *testing.T) {
	t.Parallel()
	srv := openaitest.NewServer(t, func(context.Context, int, openaitest.Request) openaitest.Answer {
		return openaitest.Answer{Content: turnJSON, Usage: openaitest.Usage{PromptTokens: 1200, CompletionTokens: 300, CachedTokens: 1024}}
	})
	resp, err := newProvider(t, srv).Complete(t.Context(), request())
	require.NoError(t, err)

	// prompt_tokens already includes the cached tokens: they are a part, not an addition.
	require.Equal(t, llm.Usage{InputTokens: 1200, OutputTokens: 300, CachedTokens: 1024}, resp.Usage)
	require.Equal(t, int64(1500), resp.Usage.Total())
	require.JSONEq(t, turnJSON, resp.Content)
	require.Equal(t, "gpt-test", resp.Model)
	require.Equal(t, 1, resp.Attempts)

	reqs := srv.Requests()
	require.Len(t, reqs, 1)
	got := reqs[0]
	require.Equal(t, "json_schema", got.ResponseFormat)
	require.True(t, got.Strict)
	require.Equal(t, "convergence_turn", got.LLM.Schema.Name)
	require.JSONEq(t, turnSchema, string(got.LLM.Schema.JSON))
	require.Equal(t, "You are a reviewer.", got.LLM.System)
	require.Equal(t, request().Messages, got.LLM.Messages)
	require.Equal(t, "gpt-test", got.LLM.Model)
	require.Equal(t, int64(512), got.LLM.MaxTokens)
	require.Contains(t, string(got.Body), `"max_completion_tokens":512`)
	require.Equal(t, "Bearer sk-test", got.Header.Get("Authorization"))
}

func TestComplete_TransientStatusThenSuccess_RetriedAndUsageCountedOnce(t *testing.T) {
	t.Parallel()
	for _, status := range []int{http.StatusTooManyRequests, http.StatusInternalServerError, http.StatusServiceUnavailable} {
		t.Run(http.StatusText(status), func(t *testing.T) {
			t.Parallel()
			srv := openaitest.NewServer(t, func(_ context.Context, n int, _ openaitest.Request) openaitest.Answer {
				if n == 1 {
					return openaitest.Answer{Status: status, Header: map[string]string{"Retry-After-Ms": "20"}}
				}
				return openaitest.Answer{Content: turnJSON, Usage: openaitest.Usage{PromptTokens: 400, CompletionTokens: 50, CachedTokens: 100}}
			})
			start := time.Now()
			resp, err := retrying(newProvider(t, srv)).Complete(t.Context(), request())
			require.NoError(t, err)
			require.GreaterOrEqual(t, time.Since(start), 20*time.Millisecond, "retry-after-ms must be honoured")
			require.Len(t, srv.Requests(), 2)
			require.Equal(t, 2, resp.Attempts)
			require.Equal(t, llm.Usage{InputTokens: 400, OutputTokens: 50, CachedTokens: 100}, resp.Usage)
			require.Equal(t, srv.Reported(), resp.Usage)
		})
	}
}

func TestComplete_RateLimitedEveryTime_ErrRateLimitedAfterMaxAttempts(t *testing.T) {
	t.Parallel()
	srv := openaitest.NewServer(t, func(context.Context, int, openaitest.Request) openaitest.Answer {
		return openaitest.Answer{Status: http.StatusTooManyRequests, Header: map[string]string{"Retry-After": "0"}}
	})
	_, err := retrying(newProvider(t, srv)).Complete(t.Context(), request())
	require.ErrorIs(t, err, llm.ErrRateLimited)
	require.Len(t, srv.Requests(), 3)
}

func TestComplete_MalformedReplies(t *testing.T) {
	t.Parallel()
	billed := openaitest.Usage{PromptTokens: 300, CompletionTokens: 40}
	tests := []struct {
		name      string
		answer    openaitest.Answer
		wantUsage llm.Usage
	}{
		{"a truncated body", openaitest.Answer{RawBody: `{"id":"chatcmpl-1","choices":[{"index":0,"message":{"content":"{\"pro`}, llm.Usage{}},
		{"a body that is not JSON", openaitest.Answer{RawBody: `<html>gateway</html>`}, llm.Usage{}},
		{"no choices", openaitest.Answer{RawBody: `{"id":"x","object":"chat.completion","model":"m","choices":[],"usage":{"prompt_tokens":300,"completion_tokens":40,"total_tokens":340}}`}, llm.Usage{InputTokens: 300, OutputTokens: 40}},
		{"content that is not JSON", openaitest.Answer{Content: "Sure! I think we should cache per tenant.", Usage: billed}, llm.Usage{InputTokens: 300, OutputTokens: 40}},
		{"truncated JSON content", openaitest.Answer{Content: `{"proposal":"Cache per`, Usage: billed}, llm.Usage{InputTokens: 300, OutputTokens: 40}},
		{"a refusal", openaitest.Answer{Refusal: "I can't help with that.", Usage: billed}, llm.Usage{InputTokens: 300, OutputTokens: 40}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := openaitest.NewServer(t, func(context.Context, int, openaitest.Request) openaitest.Answer { return tt.answer })
			_, err := retrying(newProvider(t, srv)).Complete(t.Context(), request())
			require.ErrorIs(t, err, llm.ErrBadResponse)
			var perr *llm.Error
			require.ErrorAs(t, err, &perr)
			require.Equal(t, tt.wantUsage, perr.Usage, "a billed bad reply reports what it cost")
			require.Len(t, srv.Requests(), 1, "a bad response is not retried by the provider layer")
		})
	}
}

func TestComplete_FencedJSONContent_Extracted(t *testing.T) {
	t.Parallel()
	srv := openaitest.NewServer(t, func(context.Context, int, openaitest.Request) openaitest.Answer {
		return openaitest.Answer{Content: "```json\n" + turnJSON + "\n```", Usage: openaitest.Usage{PromptTokens: 10, CompletionTokens: 5}}
	})
	resp, err := newProvider(t, srv).Complete(t.Context(), request())
	require.NoError(t, err)
	require.JSONEq(t, turnJSON, resp.Content)
}

func TestComplete_JSONSchemaRejected_FallsBackToJSONObjectAndRemembers(t *testing.T) {
	t.Parallel()
	srv := openaitest.NewServer(t, func(_ context.Context, _ int, req openaitest.Request) openaitest.Answer {
		if req.ResponseFormat == "json_schema" {
			return openaitest.Answer{Status: http.StatusBadRequest, ErrorParam: "response_format",
				ErrorMessage: "response_format type json_schema is not supported by this server"}
		}
		return openaitest.Answer{Content: turnJSON, Usage: openaitest.Usage{PromptTokens: 500, CompletionTokens: 60}}
	})
	p := newProvider(t, srv)

	resp, err := retrying(p).Complete(t.Context(), request())
	require.NoError(t, err)
	require.JSONEq(t, turnJSON, resp.Content)
	require.Equal(t, llm.Usage{InputTokens: 500, OutputTokens: 60}, resp.Usage, "the rejected request is not billed")
	require.Equal(t, 2, resp.Attempts)

	reqs := srv.Requests()
	require.Len(t, reqs, 2)
	require.Equal(t, "json_schema", reqs[0].ResponseFormat)
	require.Equal(t, "json_object", reqs[1].ResponseFormat)
	require.Contains(t, reqs[1].LLM.System, "JSON Schema", "json_object mode gets the schema as instructions")
	require.Contains(t, reqs[1].LLM.System, `"proposal"`)

	_, err = p.Complete(t.Context(), request())
	require.NoError(t, err)
	reqs = srv.Requests()
	require.Len(t, reqs, 3, "the provider remembers the fallback and does not ask with json_schema again")
	require.Equal(t, "json_object", reqs[2].ResponseFormat)
}

func TestComplete_BadRequestEvenWithJSONObject_Permanent(t *testing.T) {
	t.Parallel()
	srv := openaitest.NewServer(t, func(context.Context, int, openaitest.Request) openaitest.Answer {
		return openaitest.Answer{Status: http.StatusBadRequest, ErrorMessage: "context length exceeded"}
	})
	_, err := retrying(newProvider(t, srv)).Complete(t.Context(), request())
	require.ErrorIs(t, err, llm.ErrPermanent)
	require.Len(t, srv.Requests(), 2, "one json_schema request and one json_object fallback, no retries")
}

func TestComplete_PermanentStatus_NotRetried(t *testing.T) {
	t.Parallel()
	srv := openaitest.NewServer(t, func(context.Context, int, openaitest.Request) openaitest.Answer {
		return openaitest.Answer{Status: http.StatusUnauthorized, ErrorMessage: "invalid api key"}
	})
	_, err := retrying(newProvider(t, srv)).Complete(t.Context(), request())
	require.ErrorIs(t, err, llm.ErrPermanent)
	require.Contains(t, err.Error(), "401")
	require.Len(t, srv.Requests(), 1)
}

func TestComplete_ErrorBodyNotOpenAIShaped_ClassifiedByStatus(t *testing.T) {
	t.Parallel()
	srv := openaitest.NewServer(t, func(_ context.Context, n int, _ openaitest.Request) openaitest.Answer {
		if n == 1 {
			return openaitest.Answer{Status: http.StatusBadGateway, RawBody: `upstream connect error`}
		}
		return openaitest.Answer{Content: turnJSON, Usage: openaitest.Usage{PromptTokens: 9, CompletionTokens: 3}}
	})
	resp, err := retrying(newProvider(t, srv)).Complete(t.Context(), request())
	require.NoError(t, err)
	require.Equal(t, 2, resp.Attempts)
}

func TestComplete_ServerUnreachable_ServerError(t *testing.T) {
	t.Parallel()
	srv := openaitest.NewServer(t, func(context.Context, int, openaitest.Request) openaitest.Answer { return openaitest.Answer{} })
	p := newProvider(t, srv)
	srv.Close()
	_, err := p.Complete(t.Context(), request())
	require.ErrorIs(t, err, llm.ErrServer)
}

func TestComplete_UseMaxTokensAndNoSchema(t *testing.T) {
	t.Parallel()
	srv := openaitest.NewServer(t, func(context.Context, int, openaitest.Request) openaitest.Answer {
		return openaitest.Answer{Content: "plain text", Usage: openaitest.Usage{PromptTokens: 9, CompletionTokens: 3}}
	})
	p, err := openai.New(openai.Config{Name: "ollama", BaseURL: srv.BaseURL(), Model: "llama3", UseMaxTokens: true, HTTPClient: srv.Client()}, discard())
	require.NoError(t, err)
	req := request()
	req.Schema = nil
	resp, err := p.Complete(t.Context(), req)
	require.NoError(t, err)
	require.Equal(t, "plain text", resp.Content)
	require.Equal(t, "ollama", p.Name())
	got := srv.Requests()[0]
	require.Empty(t, got.ResponseFormat)
	require.Contains(t, string(got.Body), `"max_tokens":512`)
	require.Empty(t, got.Header.Get("Authorization"), "no key configured, none sent")
}

func TestComplete_CancelledContext_ReturnsContextError(t *testing.T) {
	t.Parallel()
	srv := openaitest.NewServer(t, func(ctx context.Context, _ int, _ openaitest.Request) openaitest.Answer {
		<-ctx.Done()
		return openaitest.Answer{Status: http.StatusServiceUnavailable}
	})
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Millisecond)
	defer cancel()
	_, err := newProvider(t, srv).Complete(ctx, request())
	require.ErrorIs(t, err, context.DeadlineExceeded)
	var perr *llm.Error
	require.NotErrorAs(t, err, &perr, "the caller's own deadline is not a provider failure")
}

func TestNew_IgnoresEnvironment(t *testing.T) {
	t.Setenv("OPENAI_BASE_URL", "http://127.0.0.1:1/v1")
	t.Setenv("OPENAI_API_KEY", "sk-from-env")
	srv := openaitest.NewServer(t, func(context.Context, int, openaitest.Request) openaitest.Answer {
		return openaitest.Answer{Content: turnJSON}
	})
	_, err := newProvider(t, srv).Complete(t.Context(), request())
	require.NoError(t, err)
	require.Equal(t, "Bearer sk-test", srv.Requests()[0].Header.Get("Authorization"))
}

func TestNew_InvalidBaseURL(t *testing.T) {
	t.Parallel()
	_, err := openai.New(openai.Config{BaseURL: "localhost:11434"}, discard())
	require.ErrorContains(t, err, "want an http or https URL")
}
