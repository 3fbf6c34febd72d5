package engine_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/convergence-dev/convergence/services/converger/engine"
	"github.com/convergence-dev/convergence/services/converger/llm"
	"github.com/convergence-dev/convergence/services/converger/llm/anthropic"
	"github.com/convergence-dev/convergence/services/converger/llm/anthropic/anthropictest"
	"github.com/convergence-dev/convergence/services/converger/llm/openai"
	"github.com/convergence-dev/convergence/services/converger/llm/openai/openaitest"
	"github.com/convergence-dev/convergence/services/converger/llm/simulated"
)

// These tests run whole discussions against fake servers that speak the providers' real wire
// protocols, with the simulated agents behind them, and check that the usage the engine
// records is exactly what the servers reported.

func fastRetry() llm.RetryPolicy {
	return llm.RetryPolicy{MaxAttempts: 3, BaseDelay: time.Millisecond, MaxDelay: 5 * time.Millisecond, CallTimeout: 10 * time.Second}
}

func TestRun_OverOpenAIWire_MalformedRepliesRateLimitCachedTokens_ExactUsage(t *testing.T) {
	t.Parallel()
	play := openaitest.Simulate(simulated.New(simulated.Config{}), true)
	srv := openaitest.NewServer(t, func(ctx context.Context, n int, req openaitest.Request) openaitest.Answer {
		switch n {
		case 2: // B1 is rate limited once.
			return openaitest.Answer{Status: http.StatusTooManyRequests, Header: map[string]string{"Retry-After-Ms": "5"}}
		case 4: // A2 answers in prose: billed, unusable, asked again.
			return openaitest.Answer{Content: "Sure! I think we should cache per tenant.", Usage: openaitest.Usage{PromptTokens: 777, CompletionTokens: 11, CachedTokens: 512}}
		case 6: // B2's body is cut off: nothing usable, nothing known to be billed.
			return openaitest.Answer{RawBody: `{"id":"chatcmpl-6","object":"chat.completion","choices":[{"index":0,"message":{"content":"{\"pro`}
		}
		return play(ctx, req)
	})
	p, err := openai.New(openai.Config{BaseURL: srv.BaseURL(), APIKey: "sk-test", Model: "gpt-test", HTTPClient: srv.Client()}, discard())
	require.NoError(t, err)
	e := newEngine(t, llm.NewRetrying(p, fastRetry(), discard()))

	res, err := e.Run(t.Context(), task("[sim:converge]"), engine.Options{})
	require.NoError(t, err)
	require.Equal(t, engine.StopConverged, res.StopReason)
	require.True(t, res.Synthesized)
	require.Len(t, srv.Requests(), 10, "7 logical calls + 1 rate-limit retry + 2 repairs")
	require.Equal(t, 2, res.Rounds[1].A.Attempts)
	require.Equal(t, 2, res.Rounds[1].B.Attempts)
	require.Equal(t, 1, res.Rounds[0].B.Attempts, "a provider-level retry is not a new attempt of the turn")

	reported := srv.Reported()
	require.Equal(t, reported, res.Usage.Total, "every billed token recorded exactly once")
	require.Positive(t, reported.CachedTokens)
	// A2 is the prose reply (777 in, 512 of them cached) plus its repair, whose prompt the
	// simulation reports a quarter cached.
	a2 := res.Rounds[1].A.Usage
	require.Equal(t, 512+(a2.InputTokens-777)/4, a2.CachedTokens, "the malformed reply's billed tokens are kept")
	require.Equal(t, "gpt-test", res.Model)
	requireResultConsistent(t, res)
}

func TestRun_OverAnthropicWire_MissingToolCallOverloadCacheTokens_ExactUsage(t *testing.T) {
	t.Parallel()
	play := anthropictest.Simulate(simulated.New(simulated.Config{}), true)
	srv := anthropictest.NewServer(t, func(ctx context.Context, n int, req anthropictest.Request) anthropictest.Answer {
		switch n {
		case 2: // B1 hits an overloaded server once.
			return anthropictest.Answer{Status: 529, Header: map[string]string{"Retry-After": "0"}}
		case 3: // and then a rate limit.
			return anthropictest.Answer{Status: http.StatusTooManyRequests, Header: map[string]string{"Retry-After": "0.005"}}
		case 5: // A2 answers in text instead of calling the tool: billed, asked again.
			return anthropictest.Answer{Text: "I agree, let's cache per tenant.", Usage: anthropictest.Usage{InputTokens: 100, OutputTokens: 12, CacheReadInputTokens: 600, CacheCreationInputTokens: 50}}
		case 7: // B2's body is cut off.
			return anthropictest.Answer{RawBody: `{"id":"msg_7","type":"message","content":[{"type":"tool_use","input":{"pro`}
		}
		return play(ctx, req)
	})
	p, err := anthropic.New(anthropic.Config{BaseURL: srv.URL, APIKey: "sk-ant-test", Model: "claude-test", HTTPClient: srv.Client()}, discard())
	require.NoError(t, err)
	e := newEngine(t, llm.NewRetrying(p, fastRetry(), discard()))

	res, err := e.Run(t.Context(), task("[sim:converge]"), engine.Options{})
	require.NoError(t, err)
	require.Equal(t, engine.StopConverged, res.StopReason)
	require.True(t, res.Synthesized)
	require.Len(t, srv.Requests(), 11, "7 logical calls + 2 provider retries + 2 repairs")
	for _, req := range srv.Requests() {
		require.Equal(t, "tool", req.ToolChoiceType)
	}

	reported := srv.Reported()
	require.Equal(t, reported, res.Usage.Total, "every billed token recorded exactly once")
	require.Positive(t, reported.CachedTokens)
	require.Positive(t, reported.CacheCreationTokens)
	require.Equal(t, "claude-test", res.Model)
	requireResultConsistent(t, res)
}

func TestRun_OverOpenAIWire_JSONSchemaRejected_FallsBackAndConverges(t *testing.T) {
	t.Parallel()
	play := openaitest.Simulate(simulated.New(simulated.Config{}), false)
	srv := openaitest.NewServer(t, func(ctx context.Context, _ int, req openaitest.Request) openaitest.Answer {
		if req.ResponseFormat == "json_schema" {
			return openaitest.Answer{Status: http.StatusBadRequest, ErrorParam: "response_format", ErrorMessage: "json_schema is not supported"}
		}
		a := play(ctx, req)
		a.Content = "```json\n" + a.Content + "\n```" // Local models like to fence their JSON.
		return a
	})
	p, err := openai.New(openai.Config{Name: "llama.cpp", BaseURL: srv.BaseURL(), Model: "local", HTTPClient: srv.Client()}, discard())
	require.NoError(t, err)
	e := newEngine(t, llm.NewRetrying(p, fastRetry(), discard()))

	res, err := e.Run(t.Context(), task("[sim:never]"), engine.Options{})
	require.NoError(t, err)
	require.Equal(t, engine.StopMaxRounds, res.StopReason)
	reqs := srv.Requests()
	require.Len(t, reqs, 9, "one rejected json_schema request, then json_object for all 8 turns")
	require.Equal(t, "json_schema", reqs[0].ResponseFormat)
	for _, req := range reqs[1:] {
		require.Equal(t, "json_object", req.ResponseFormat)
	}
	for _, rd := range res.Rounds {
		require.True(t, rd.A.Valid)
		require.True(t, rd.B.Valid)
		require.Equal(t, 1, rd.A.Attempts)
	}
	require.Equal(t, srv.Reported(), res.Usage.Total)
	require.Equal(t, "llama.cpp", res.Provider)
}
