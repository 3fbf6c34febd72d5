package anthropic_test

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
	"github.com/convergence-dev/convergence/services/converger/llm/anthropic"
	"github.com/convergence-dev/convergence/services/converger/llm/anthropic/anthropictest"
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

func newProvider(t *testing.T, srv *anthropictest.Server, caching bool) *anthropic.Provider {
	t.Helper()
	p, err := anthropic.New(anthropic.Config{BaseURL: srv.URL, APIKey: "sk-ant-test", Model: "claude-test", PromptCaching: caching, HTTPClient: srv.Client()}, discard())
	require.NoError(t, err)
	return p
}

func retrying(p llm.Provider) *llm.Retrying {
	return llm.NewRetrying(p, llm.RetryPolicy{MaxAttempts: 3, BaseDelay: time.Millisecond, MaxDelay: 5 * time.Millisecond}, discard())
}

func TestComplete_ForcedToolUseWithCacheTokens_ExactUsage(t *testing.T) {
	t.Parallel()
	srv := anthropictest.NewServer(t, func(context.Context, int, anthropictest.Request) anthropictest.Answer {
		return anthropictest.Answer{
			Text:      "Let me record my position.",
			ToolInput: turnJSON,
			Usage:     anthropictest.Usage{InputTokens: 150, OutputTokens: 80, CacheCreationInputTokens: 200, CacheReadInputTokens: 1000},
		}
	})
	resp, err := newProvider(t, srv, false).Complete(t.Context(), request())
	require.NoError(t, err)

	// input_tokens excludes cache reads and writes, so InputTokens adds them; the cache
	// fields stay parts of InputTokens.
	require.Equal(t, llm.Usage{InputTokens: 1350, OutputTokens: 80, CachedTokens: 1000, CacheCreationTokens: 200}, resp.Usage)
	require.Equal(t, int64(1430), resp.Usage.Total())
	require.JSONEq(t, turnJSON, resp.Content, "the tool input is the reply")
	require.Equal(t, "claude-test", resp.Model)

	got := srv.Requests()[0]
	require.Equal(t, "tool", got.ToolChoiceType)
	require.Equal(t, "convergence_turn", got.ToolChoiceName)
	require.NotNil(t, got.LLM.Schema, "the forced tool is declared")
	var schema map[string]any
	require.NoError(t, json.Unmarshal(got.LLM.Schema.JSON, &schema))
	require.Equal(t, "object", schema["type"])
	require.Equal(t, []any{"proposal", "agreement"}, schema["required"])
	require.Equal(t, false, schema["additionalProperties"])
	require.Contains(t, schema["properties"], "proposal")
	require.Equal(t, "You are a reviewer.", got.LLM.System)
	require.Equal(t, request().Messages, got.LLM.Messages)
	require.Equal(t, int64(512), got.LLM.MaxTokens)
	require.Equal(t, "claude-test", got.LLM.Model)
	require.Zero(t, got.CacheControl)
	require.Contains(t, string(got.Body), `"disable_parallel_tool_use":true`)
}

func TestComplete_TransientStatusThenSuccess_RetriedAndUsageCountedOnce(t *testing.T) {
	t.Parallel()
	for _, status := range []int{http.StatusTooManyRequests, http.StatusInternalServerError, 529} {
		t.Run(http.StatusText(status), func(t *testing.T) {
			t.Parallel()
			srv := anthropictest.NewServer(t, func(_ context.Context, n int, _ anthropictest.Request) anthropictest.Answer {
				if n == 1 {
					return anthropictest.Answer{Status: status, Header: map[string]string{"Retry-After": "0.02"}}
				}
				return anthropictest.Answer{ToolInput: turnJSON, Usage: anthropictest.Usage{InputTokens: 400, OutputTokens: 50, CacheReadInputTokens: 100}}
			})
			start := time.Now()
			resp, err := retrying(newProvider(t, srv, false)).Complete(t.Context(), request())
			require.NoError(t, err)
			require.GreaterOrEqual(t, time.Since(start), 20*time.Millisecond, "Retry-After must be honoured")
			require.Len(t, srv.Requests(), 2)
			require.Equal(t, 2, resp.Attempts)
			require.Equal(t, llm.Usage{InputTokens: 500, OutputTokens: 50, CachedTokens: 100}, resp.Usage)
			require.Equal(t, srv.Reported(), resp.Usage)
		})
	}
}

func TestComplete_MalformedReplies(t *testing.T) {
	t.Parallel()
	billed := anthropictest.Usage{InputTokens: 300, OutputTokens: 40}
	tests := []struct {
		name      string
		answer    anthropictest.Answer
		wantUsage llm.Usage
	}{
		{"a truncated body", anthropictest.Answer{RawBody: `{"id":"msg_1","type":"message","content":[{"type":"tool_use","input":{"pro`}, llm.Usage{}},
		{"a body that is not JSON", anthropictest.Answer{RawBody: `<html>gateway</html>`}, llm.Usage{}},
		{"text instead of the tool call", anthropictest.Answer{Text: "I think we should cache per tenant.", Usage: billed}, llm.Usage{InputTokens: 300, OutputTokens: 40}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := anthropictest.NewServer(t, func(context.Context, int, anthropictest.Request) anthropictest.Answer { return tt.answer })
			_, err := retrying(newProvider(t, srv, false)).Complete(t.Context(), request())
			require.ErrorIs(t, err, llm.ErrBadResponse)
			var perr *llm.Error
			require.ErrorAs(t, err, &perr)
			require.Equal(t, tt.wantUsage, perr.Usage, "a billed bad reply reports what it cost")
			require.Len(t, srv.Requests(), 1, "a bad response is not retried by the provider layer")
		})
	}
}

func TestComplete_PermanentStatus_NotRetried(t *testing.T) {
	t.Parallel()
	srv := anthropictest.NewServer(t, func(context.Context, int, anthropictest.Request) anthropictest.Answer {
		return anthropictest.Answer{Status: http.StatusBadRequest, ErrorMessage: "max_tokens: too large"}
	})
	_, err := retrying(newProvider(t, srv, false)).Complete(t.Context(), request())
	require.ErrorIs(t, err, llm.ErrPermanent)
	require.ErrorContains(t, err, "max_tokens: too large")
	require.Len(t, srv.Requests(), 1)
}

func TestComplete_PromptCaching_MarksSystemAndLastMessage(t *testing.T) {
	t.Parallel()
	srv := anthropictest.NewServer(t, func(context.Context, int, anthropictest.Request) anthropictest.Answer {
		return anthropictest.Answer{ToolInput: turnJSON}
	})
	_, err := newProvider(t, srv, true).Complete(t.Context(), request())
	require.NoError(t, err)
	require.Equal(t, 2, srv.Requests()[0].CacheControl)
}

func TestComplete_NoSchema_ReturnsText(t *testing.T) {
	t.Parallel()
	srv := anthropictest.NewServer(t, func(context.Context, int, anthropictest.Request) anthropictest.Answer {
		return anthropictest.Answer{Text: "plain answer", Usage: anthropictest.Usage{InputTokens: 5, OutputTokens: 2}}
	})
	req := request()
	req.Schema = nil
	resp, err := newProvider(t, srv, false).Complete(t.Context(), req)
	require.NoError(t, err)
	require.Equal(t, "plain answer", resp.Content)
	require.Empty(t, srv.Requests()[0].ToolChoiceType)
}

func TestNew_IgnoresEnvironment(t *testing.T) {
	t.Setenv("ANTHROPIC_BASE_URL", "http://127.0.0.1:1")
	t.Setenv("ANTHROPIC_API_KEY", "sk-ant-from-env")
	srv := anthropictest.NewServer(t, func(context.Context, int, anthropictest.Request) anthropictest.Answer {
		return anthropictest.Answer{ToolInput: turnJSON}
	})
	_, err := newProvider(t, srv, false).Complete(t.Context(), request())
	require.NoError(t, err)
	h := srv.Requests()[0].Header
	require.NotContains(t, h.Get("X-Api-Key")+h.Get("Authorization"), "from-env")
	require.Contains(t, h.Get("X-Api-Key")+h.Get("Authorization"), "sk-ant-test")
}
