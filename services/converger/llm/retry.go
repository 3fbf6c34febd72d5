package llm

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"
)

// RetryPolicy says how [Retrying] retries. The zero value of a field means its default.
type RetryPolicy struct {
	// MaxAttempts bounds the calls made for one Complete, the first included. Default 4.
	MaxAttempts int
	// BaseDelay is the backoff before the second attempt; it doubles per attempt. Default
	// 500ms.
	BaseDelay time.Duration
	// MaxDelay caps the computed backoff. Default 20s.
	MaxDelay time.Duration
	// MaxRetryAfter is the longest Retry-After that is waited out; a provider asking for more
	// gets its error returned at once so the caller can reschedule the work. Default 60s.
	MaxRetryAfter time.Duration
	// CallTimeout bounds each attempt; an attempt that outlives it fails with ErrTimeout and
	// is retried. Default 2m.
	CallTimeout time.Duration
}

// DefaultRetryPolicy returns the policy used for zero fields.
func DefaultRetryPolicy() RetryPolicy {
	return RetryPolicy{
		MaxAttempts:   4,
		BaseDelay:     500 * time.Millisecond,
		MaxDelay:      20 * time.Second,
		MaxRetryAfter: time.Minute,
		CallTimeout:   2 * time.Minute,
	}
}

func (p RetryPolicy) withDefaults() RetryPolicy {
	d := DefaultRetryPolicy()
	if p.MaxAttempts <= 0 {
		p.MaxAttempts = d.MaxAttempts
	}
	if p.BaseDelay <= 0 {
		p.BaseDelay = d.BaseDelay
	}
	if p.MaxDelay <= 0 {
		p.MaxDelay = d.MaxDelay
	}
	if p.MaxRetryAfter <= 0 {
		p.MaxRetryAfter = d.MaxRetryAfter
	}
	if p.CallTimeout <= 0 {
		p.CallTimeout = d.CallTimeout
	}
	return p
}

// Backoff is the wait before attempt number attempt+1 after attempt failed: the provider's
// Retry-After when it gave one, otherwise BaseDelay·2^(attempt-1) capped at MaxDelay with
// "equal jitter" (a uniformly random wait in the upper half of that bound), so that many
// callers rate limited together do not come back together.
func (p RetryPolicy) Backoff(attempt int, retryAfter time.Duration) time.Duration {
	p = p.withDefaults()
	if retryAfter > 0 {
		return retryAfter
	}
	d := p.BaseDelay
	for i := 1; i < attempt && d < p.MaxDelay; i++ {
		d *= 2
	}
	d = min(d, p.MaxDelay)
	half := d / 2
	return half + rand.N(half+1) //nolint:gosec // G404: jitter needs no cryptographic randomness.
}

// Retrying is a [Provider] that retries another one on rate limits, server errors and
// per-call timeouts, with exponential backoff and jitter, honouring Retry-After, for a bounded
// number of attempts. Bad responses and permanent errors are returned at once. It is the only
// place that retries, so the provider SDKs' own retries must be disabled.
//
// Retrying is safe for concurrent use and holds no resources: there is nothing to close.
type Retrying struct {
	next   Provider
	policy RetryPolicy
	log    *slog.Logger
}

// NewRetrying wraps next with policy (zero fields take their defaults).
func NewRetrying(next Provider, policy RetryPolicy, logger *slog.Logger) *Retrying {
	return &Retrying{
		next:   next,
		policy: policy.withDefaults(),
		log:    logger.With("component", "llm.retry", "provider", next.Name()),
	}
}

// Name returns the wrapped provider's name.
func (r *Retrying) Name() string { return r.next.Name() }

// Complete calls the wrapped provider, each attempt under its own CallTimeout, until it
// succeeds, fails in a way that retrying cannot fix, runs out of attempts, or ctx is done.
// Backoff waits return as soon as ctx is done. When the wait would outlast ctx's deadline the
// last error is returned without waiting. Response.Attempts counts every attempt made.
func (r *Retrying) Complete(ctx context.Context, req Request) (Response, error) {
	made := 0
	for attempt := 1; ; attempt++ {
		resp, err := r.attempt(ctx, req)
		made += max(resp.Attempts, 1)
		if err == nil {
			resp.Attempts = made
			return resp, nil
		}
		if ctx.Err() != nil {
			return Response{}, fmt.Errorf("%s: %w", r.next.Name(), context.Cause(ctx))
		}
		var perr *Error
		if !errors.As(err, &perr) || !perr.Retryable() {
			return Response{}, err
		}
		if attempt >= r.policy.MaxAttempts {
			return Response{}, fmt.Errorf("after %d attempts: %w", attempt, err)
		}
		if perr.RetryAfter > r.policy.MaxRetryAfter {
			return Response{}, fmt.Errorf("retry-after %s exceeds %s: %w", perr.RetryAfter, r.policy.MaxRetryAfter, err)
		}
		wait := r.policy.Backoff(attempt, perr.RetryAfter)
		if deadline, ok := ctx.Deadline(); ok && time.Until(deadline) < wait {
			return Response{}, fmt.Errorf("no time left to retry: %w", err)
		}
		r.log.LogAttrs(ctx, slog.LevelWarn, "retrying provider call",
			slog.Int("attempt", attempt), slog.Duration("wait", wait),
			slog.Int("status", perr.StatusCode), slog.String("kind", perr.Kind.Error()))
		if err := sleep(ctx, wait); err != nil {
			return Response{}, fmt.Errorf("%s: %w", r.next.Name(), err)
		}
	}
}

func (r *Retrying) attempt(ctx context.Context, req Request) (Response, error) {
	callCtx, cancel := context.WithTimeout(ctx, r.policy.CallTimeout)
	defer cancel()
	resp, err := r.next.Complete(callCtx, req)
	if err != nil && ctx.Err() == nil && errors.Is(callCtx.Err(), context.DeadlineExceeded) {
		return resp, &Error{
			Kind:     ErrTimeout,
			Provider: r.next.Name(),
			Err:      fmt.Errorf("no answer within %s", r.policy.CallTimeout),
		}
	}
	return resp, err
}

// sleep waits for d or until ctx is done, whichever comes first.
func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return context.Cause(ctx)
	case <-t.C:
		return nil
	}
}
