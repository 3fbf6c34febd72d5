package converger_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/convergence-dev/convergence/pkg/events"
	"github.com/convergence-dev/convergence/services/converger"
	"github.com/convergence-dev/convergence/services/converger/llm/anthropic/anthropictest"
	"github.com/convergence-dev/convergence/services/converger/llm/openai/openaitest"
	"github.com/convergence-dev/convergence/services/converger/llm/simulated"
	"github.com/convergence-dev/convergence/services/converger/tasks"
)

// These tests run tasks through the whole service (outbox, JetStream, consumer, persistence)
// against fake servers that speak the providers' wire formats, and check that the usage
// recorded on the task, in its result event and in its persisted turns is exactly what the
// servers reported as billed.

func TestConverger_OverOpenAIWire_MalformedReplyRateLimitCachedTokens_ExactUsage(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	acme := e.tenant("acme")
	play := openaitest.Simulate(simulated.New(simulated.Config{}), true)
	srv := openaitest.NewServer(t, func(ctx context.Context, n int, req openaitest.Request) openaitest.Answer {
		switch n {
		case 2: // B1 is rate limited once, then succeeds.
			return openaitest.Answer{Status: http.StatusTooManyRequests, Header: map[string]string{"Retry-After-Ms": "5"}}
		case 4: // A2 answers in prose: billed (with cached tokens), unusable, asked again.
			return openaitest.Answer{Content: "Sure! I think we should cache per tenant.", Usage: openaitest.Usage{PromptTokens: 777, CompletionTokens: 11, CachedTokens: 512}}
		case 6: // B2's body is cut off: nothing usable, nothing known to be billed.
			return openaitest.Answer{RawBody: `{"id":"chatcmpl-6","object":"chat.completion","choices":[{"index":0,"message":{"content":"{\"pro`}
		}
		return play(ctx, req)
	})
	cfg := testConfig()
	cfg.Provider = converger.ProviderOpenAI
	cfg.OpenAI = converger.OpenAIConfig{Name: "openai", BaseURL: srv.BaseURL(), APIKey: "sk-test", Model: "gpt-test"}
	e.startConverger(cfg, nil)

	id := e.submit(acme, tasks.Request{Prompt: "Design a rate limiter for a multi-tenant API. [sim:converge]", Type: "design"})
	rec := e.waitFinished(acme, id, 20*time.Second)

	require.Equal(t, tasks.StatusCompleted, rec.Status)
	require.EqualValues(t, "converged", rec.Result.StopReason)
	reported := srv.Reported()
	require.Positive(t, reported.CachedTokens)
	want := tasks.UsageOf(reported)
	require.Equal(t, want, rec.Usage, "the task's usage is every billed token, once")
	require.Equal(t, want, tasks.EventUsage(rec.Result.Usage))
	require.Equal(t, want, e.persistedUsage(id), "the persisted turns hold the same tokens")
	requireAgentsAddUp(t, rec.Result)

	var calls int64
	for _, a := range rec.Result.Agents {
		calls += a.Calls
		require.Equal(t, "openai", a.Provider)
		require.Equal(t, "gpt-test", a.Model)
	}
	require.Len(t, srv.Requests(), 10, "7 logical calls, 1 rate-limit retry, 2 repairs of malformed replies")
	require.EqualValues(t, 9, calls, "every answered call counts, the rate-limited one does not")

	ev := decodeData[events.ConvergeCompleted](t, e.waitResultEvent(id))
	require.Equal(t, want, ev.Usage)
	require.Equal(t, tasks.EventAgents(rec.Result.Agents), ev.Agents)
	require.Equal(t, "converged", ev.StopReason)
	require.InDelta(t, float64(rec.Result.ConvergenceScore), ev.ConvergenceScore, 0)
}

func TestConverger_OverAnthropicWire_MissingToolCallOverloadCacheReads_ExactUsage(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	acme := e.tenant("acme")
	play := anthropictest.Simulate(simulated.New(simulated.Config{}), true)
	srv := anthropictest.NewServer(t, func(ctx context.Context, n int, req anthropictest.Request) anthropictest.Answer {
		switch n {
		case 2: // B1 hits an overloaded server, then a rate limit, then succeeds.
			return anthropictest.Answer{Status: 529, Header: map[string]string{"Retry-After": "0"}}
		case 3:
			return anthropictest.Answer{Status: http.StatusTooManyRequests, Header: map[string]string{"Retry-After": "0.005"}}
		case 5: // A2 answers in text instead of calling the tool: billed, asked again.
			return anthropictest.Answer{Text: "I agree, let's cache per tenant.", Usage: anthropictest.Usage{InputTokens: 100, OutputTokens: 12, CacheReadInputTokens: 600, CacheCreationInputTokens: 50}}
		}
		return play(ctx, req)
	})
	cfg := testConfig()
	cfg.Provider = converger.ProviderAnthropic
	cfg.Anthropic = converger.AnthropicConfig{BaseURL: srv.URL, APIKey: "sk-ant-test", Model: "claude-test", PromptCaching: true}
	e.startConverger(cfg, nil)

	id := e.submit(acme, tasks.Request{Prompt: "Design a rate limiter for a multi-tenant API. [sim:converge]", Type: "design"})
	rec := e.waitFinished(acme, id, 20*time.Second)

	require.Equal(t, tasks.StatusCompleted, rec.Status)
	reported := srv.Reported()
	require.Positive(t, reported.CachedTokens)
	require.Positive(t, reported.CacheCreationTokens)
	// Anthropic's input_tokens excludes cache reads and writes; the recorded input includes them.
	want := tasks.UsageOf(reported)
	require.Equal(t, want, rec.Usage)
	require.Equal(t, want, e.persistedUsage(id))
	requireAgentsAddUp(t, rec.Result)
	for _, req := range srv.Requests() {
		require.Equal(t, "tool", req.ToolChoiceType)
		require.Positive(t, req.CacheControl)
	}
	ev := decodeData[events.ConvergeCompleted](t, e.waitResultEvent(id))
	require.Equal(t, want, ev.Usage)
	require.Equal(t, "anthropic", ev.Agents[0].Provider)
	require.Equal(t, "claude-test", ev.Agents[0].Model)
}

func TestConverger_ProviderRejectsRequest_FailedWithTheUsageSpent(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	acme := e.tenant("acme")
	play := openaitest.Simulate(simulated.New(simulated.Config{}), false)
	srv := openaitest.NewServer(t, func(ctx context.Context, n int, req openaitest.Request) openaitest.Answer {
		if n == 3 {
			return openaitest.Answer{Status: http.StatusUnauthorized, ErrorMessage: "Incorrect API key provided: sk-te****"}
		}
		return play(ctx, req)
	})
	cfg := testConfig()
	cfg.Provider = converger.ProviderOpenAI
	cfg.OpenAI = converger.OpenAIConfig{BaseURL: srv.BaseURL(), APIKey: "sk-test", Model: "gpt-test"}
	e.startConverger(cfg, nil)

	id := e.submit(acme, tasks.Request{Prompt: "Plan a migration. [sim:converge]", Type: "plan"})
	rec := e.waitFinished(acme, id, 20*time.Second)

	require.Equal(t, tasks.StatusFailed, rec.Status)
	require.Equal(t, "the LLM provider rejected the request (status 401)", rec.Error, "the tenant is told what failed, not the provider's words")
	require.EqualValues(t, tasks.StopError, rec.Result.StopReason)
	require.Equal(t, 1, rec.Rounds)
	reported := srv.Reported()
	require.Positive(t, reported.Total())
	require.Equal(t, tasks.UsageOf(reported), rec.Usage, "the tokens of round one are billed all the same")
	requireAgentsAddUp(t, rec.Result)
	require.Len(t, srv.Requests(), 3, "a rejected request is not retried")

	ev := decodeData[events.ConvergeFailed](t, e.waitResultEvent(id))
	require.Equal(t, rec.Usage, ev.Usage)
	require.Equal(t, rec.Error, ev.Error)
	require.Len(t, ev.Agents, 2)
}
