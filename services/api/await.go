package api

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/convergence-dev/convergence/internal/httpx"
)

// await waits up to wait until a state is reached, which messages on sub announce (message
// reports whether one does) and check reads from the state's owner: once at the start, after
// the subscription is surely in place, and again every recheck in case core NATS dropped a
// message. It reports false, with no error, when the wait ran out, the caller went away or the
// server began to drain: the caller then answers with the state as it stands, and the work goes
// on. An error from check, or a broken subscription, ends the wait with it.
func (s *Service) await(ctx context.Context, sub *nats.Subscription, wait, recheck time.Duration,
	message func(*nats.Msg) bool, check func(context.Context) (bool, error)) (bool, error) {
	deadline := time.Now().Add(wait)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if draining := httpx.Draining(ctx); draining != nil {
		go func() {
			select {
			case <-draining:
				cancel()
			case <-ctx.Done():
			}
		}()
	}
	fctx, fcancel := context.WithTimeout(ctx, recheck)
	err := s.deps.NC.FlushWithContext(fctx)
	fcancel()
	if err != nil && ctx.Err() != nil {
		return false, nil
	}
	for {
		done, err := check(ctx)
		switch {
		case ctx.Err() != nil:
			return false, nil
		case err != nil:
			return false, err
		case done:
			return true, nil
		}
		for next := time.Now().Add(recheck); ; {
			if time.Until(deadline) <= 0 {
				return false, nil
			}
			left := min(time.Until(deadline), time.Until(next))
			if left <= 0 {
				break // Time to check again.
			}
			mctx, mcancel := context.WithTimeout(ctx, left)
			m, err := sub.NextMsgWithContext(mctx)
			mcancel()
			switch {
			case ctx.Err() != nil:
				return false, nil
			case errors.Is(err, context.DeadlineExceeded):
				continue
			case err != nil:
				return false, httpx.Unavailable("the message bus")
			case message(m):
				return true, nil
			}
		}
	}
}
