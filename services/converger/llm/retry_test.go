package llm_test

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/convergence-dev/convergence/services/converger/llm"
)

// scripted is a provider whose n-th call (from 1) does what script says.
type scripted struct {
	calls  atomic.Int32
	script func(ctx context.Context, n int) (llm.Response, error)
}

func (s *scripted) Name() string { return "scripted" }

func (s *scripted) Complete(ctx context.Context, _ llm.Request) (llm.Response, error) {
	return s.script(ctx, int(s.calls.Add(1)))
}

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

func fastPolicy() llm.RetryPolicy {
	return llm.RetryPolicy{MaxAttempts: 3, BaseDelay: time.Millisecond, MaxDelay: 5 * time.Millisecond, CallTimeout: time.Second}
}

func ok(usage llm.Usage) (llm.Response, error) {
	return llm.Response{Content: `{}`, Usage: usage, Attempts: 1}, nil
}

func TestRetrying_RateLimitedThenSuccess_HonoursRetryAfterAndCountsOnce(t *testing.T) {
	t.Parallel()
	want := llm.Usage{InputTokens: 100, OutputTokens: 20}
	p := &scripted{script: func(_ context.Context, n int) (llm.Response, error) {
		if n == 1 {
			return llm.Response{}, &llm.Error{Kind: llm.ErrRateLimited, Provider: "scripted", StatusCode: 429, RetryAfter: 60 * time.Millisecond}
		}
		return ok(want)
	}}
	start := time.Now()
	resp, err := llm.NewRetrying(p, fastPolicy(), discard()).Complete(t.Context(), llm.Request{})
	require.NoError(t, err)
	require.GreaterOrEqual(t, time.Since(start), 60*time.Millisecond, "Retry-After must be waited out")
	require.Equal(t, 2, resp.Attempts)
	require.Equal(t, want, resp.Usage, "only the successful call is billed")
	require.EqualValues(t, 2, p.calls.Load())
}

func TestRetrying_FailureKinds(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		kind      error
		wantCalls int32
	}{
		{"server errors are retried up to MaxAttempts", llm.ErrServer, 3},
		{"rate limits are retried up to MaxAttempts", llm.ErrRateLimited, 3},
		{"timeouts are retried up to MaxAttempts", llm.ErrTimeout, 3},
		{"bad responses are not retried", llm.ErrBadResponse, 1},
		{"permanent errors are not retried", llm.ErrPermanent, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := &scripted{script: func(context.Context, int) (llm.Response, error) {
				return llm.Response{}, &llm.Error{Kind: tt.kind, Provider: "scripted", Usage: llm.Usage{OutputTokens: 7}}
			}}
			_, err := llm.NewRetrying(p, fastPolicy(), discard()).Complete(t.Context(), llm.Request{})
			require.ErrorIs(t, err, tt.kind)
			require.Equal(t, tt.wantCalls, p.calls.Load())
			var perr *llm.Error
			require.ErrorAs(t, err, &perr)
			require.Equal(t, int64(7), perr.Usage.OutputTokens, "the failed call's usage travels with the error")
		})
	}
}

func TestRetrying_UntypedError_NotRetried(t *testing.T) {
	t.Parallel()
	p := &scripted{script: func(context.Context, int) (llm.Response, error) {
		return llm.Response{}, errors.New("boom")
	}}
	_, err := llm.NewRetrying(p, fastPolicy(), discard()).Complete(t.Context(), llm.Request{})
	require.EqualError(t, err, "boom")
	require.EqualValues(t, 1, p.calls.Load())
}

func TestRetrying_SlowCall_TimesOutPerCallAndRetries(t *testing.T) {
	t.Parallel()
	p := &scripted{script: func(ctx context.Context, n int) (llm.Response, error) {
		if n == 1 {
			<-ctx.Done() // A provider that hangs until its call is cut off.
			return llm.Response{}, ctx.Err()
		}
		return ok(llm.Usage{InputTokens: 1})
	}}
	policy := fastPolicy()
	policy.CallTimeout = 30 * time.Millisecond
	resp, err := llm.NewRetrying(p, policy, discard()).Complete(t.Context(), llm.Request{})
	require.NoError(t, err)
	require.Equal(t, 2, resp.Attempts)
}

func TestRetrying_AlwaysSlow_ErrTimeoutAfterMaxAttempts(t *testing.T) {
	t.Parallel()
	p := &scripted{script: func(ctx context.Context, _ int) (llm.Response, error) {
		<-ctx.Done()
		return llm.Response{}, ctx.Err()
	}}
	policy := fastPolicy()
	policy.CallTimeout = 10 * time.Millisecond
	_, err := llm.NewRetrying(p, policy, discard()).Complete(t.Context(), llm.Request{})
	require.ErrorIs(t, err, llm.ErrTimeout)
	require.EqualValues(t, 3, p.calls.Load())
}

func TestRetrying_CancelledDuringBackoff_ReturnsPromptly(t *testing.T) {
	t.Parallel()
	p := &scripted{script: func(context.Context, int) (llm.Response, error) {
		return llm.Response{}, &llm.Error{Kind: llm.ErrRateLimited, Provider: "scripted", RetryAfter: 30 * time.Second}
	}}
	ctx, cancel := context.WithCancel(t.Context())
	time.AfterFunc(20*time.Millisecond, cancel)
	start := time.Now()
	_, err := llm.NewRetrying(p, fastPolicy(), discard()).Complete(ctx, llm.Request{})
	require.ErrorIs(t, err, context.Canceled)
	require.Less(t, time.Since(start), 5*time.Second)
	require.EqualValues(t, 1, p.calls.Load())
}

func TestRetrying_RetryAfterBeyondMax_ReturnsWithoutWaiting(t *testing.T) {
	t.Parallel()
	p := &scripted{script: func(context.Context, int) (llm.Response, error) {
		return llm.Response{}, &llm.Error{Kind: llm.ErrRateLimited, Provider: "scripted", RetryAfter: time.Hour}
	}}
	start := time.Now()
	_, err := llm.NewRetrying(p, fastPolicy(), discard()).Complete(t.Context(), llm.Request{})
	require.ErrorIs(t, err, llm.ErrRateLimited)
	require.Less(t, time.Since(start), time.Second)
	require.EqualValues(t, 1, p.calls.Load())
}

func TestRetrying_WaitBeyondDeadline_ReturnsWithoutWaiting(t *testing.T) {
	t.Parallel()
	p := &scripted{script: func(context.Context, int) (llm.Response, error) {
		return llm.Response{}, &llm.Error{Kind: llm.ErrRateLimited, Provider: "scripted", RetryAfter: 10 * time.Second}
	}}
	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	start := time.Now()
	_, err := llm.NewRetrying(p, fastPolicy(), discard()).Complete(ctx, llm.Request{})
	require.ErrorIs(t, err, llm.ErrRateLimited)
	require.Less(t, time.Since(start), 500*time.Millisecond)
}

func TestRetryPolicy_Backoff(t *testing.T) {
	t.Parallel()
	p := llm.RetryPolicy{BaseDelay: 100 * time.Millisecond, MaxDelay: time.Second}
	tests := []struct {
		name       string
		attempt    int
		retryAfter time.Duration
		lo, hi     time.Duration
	}{
		{"first retry waits half to all of the base delay", 1, 0, 50 * time.Millisecond, 100 * time.Millisecond},
		{"the bound doubles per attempt", 3, 0, 200 * time.Millisecond, 400 * time.Millisecond},
		{"the bound is capped at MaxDelay", 10, 0, 500 * time.Millisecond, time.Second},
		{"Retry-After wins over the computed backoff", 1, 3 * time.Second, 3 * time.Second, 3 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			for range 200 {
				d := p.Backoff(tt.attempt, tt.retryAfter)
				require.GreaterOrEqual(t, d, tt.lo)
				require.LessOrEqual(t, d, tt.hi)
			}
		})
	}
}
