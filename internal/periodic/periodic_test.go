package periodic_test

import (
	"context"
	"testing"
	"time"

	"github.com/convergence-dev/convergence/internal/periodic"
)

func TestEvery_CallsOnEachTickUntilTheContextIsDone(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	calls := 0
	done := make(chan struct{})
	go func() {
		defer close(done)
		periodic.Every(ctx, time.Millisecond, func() {
			if calls++; calls == 3 {
				cancel()
			}
		})
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Every did not return once its context was done")
	}
	if calls < 3 {
		t.Errorf("%d calls, want at least the 3 before the context was done", calls)
	}
}
