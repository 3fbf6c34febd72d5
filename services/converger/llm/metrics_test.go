package llm_test

import (
	"context"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/convergence-dev/convergence/services/converger/llm"
)

func TestInstrumented_CountsEveryAttemptByOutcome_ModelOnlyFromAnswers_FailuresFromZero(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	p := &scripted{script: func(_ context.Context, n int) (llm.Response, error) {
		switch n {
		case 1:
			return llm.Response{}, &llm.Error{Kind: llm.ErrRateLimited, Provider: "scripted", StatusCode: 429}
		case 2:
			return llm.Response{}, &llm.Error{Kind: llm.ErrServer, Provider: "scripted", StatusCode: 503}
		case 3:
			return llm.Response{Content: `{}`, Model: "m-1", Attempts: 1}, nil
		default:
			return llm.Response{}, &llm.Error{Kind: llm.ErrPermanent, Provider: "scripted", StatusCode: 404}
		}
	}}
	retrying := llm.NewRetrying(llm.Instrumented(p, reg), fastPolicy(), discard())
	_, err := retrying.Complete(t.Context(), llm.Request{Model: "m-1"})
	require.NoError(t, err)
	_, err = retrying.Complete(t.Context(), llm.Request{Model: "no-such-model-a-tenant-made-up"})
	require.ErrorIs(t, err, llm.ErrPermanent)

	require.NoError(t, testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP convergence_llm_requests_total Calls to LLM providers, by provider, model and outcome.
# TYPE convergence_llm_requests_total counter
convergence_llm_requests_total{model="m-1",outcome="ok",provider="scripted"} 1
convergence_llm_requests_total{model="unknown",outcome="bad_response",provider="scripted"} 0
convergence_llm_requests_total{model="unknown",outcome="error",provider="scripted"} 0
convergence_llm_requests_total{model="unknown",outcome="rate_limited",provider="scripted"} 1
convergence_llm_requests_total{model="unknown",outcome="rejected",provider="scripted"} 1
convergence_llm_requests_total{model="unknown",outcome="server_error",provider="scripted"} 1
convergence_llm_requests_total{model="unknown",outcome="timeout",provider="scripted"} 0
`), "convergence_llm_requests_total"))
}
