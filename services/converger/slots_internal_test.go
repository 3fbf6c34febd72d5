package converger

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// queued waits until tenant has n tasks waiting for a slot.
func (f *fairSlots) queued(t *testing.T, tenant int64, n int) {
	t.Helper()
	require.Eventually(t, func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return len(f.waiting[tenant]) == n
	}, 5*time.Second, time.Millisecond)
}

func TestFairSlots_TenantsTakeTurns_EachInItsOwnOrder(t *testing.T) {
	t.Parallel()
	f := newFairSlots(1)
	release, err := f.acquire(t.Context(), 1)
	require.NoError(t, err)

	var mu sync.Mutex
	var order []string
	var wg sync.WaitGroup
	wait := func(tenant int64, name string, queuedBefore int) {
		wg.Go(func() {
			r, err := f.acquire(context.Background(), tenant)
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			order = append(order, name)
			mu.Unlock()
			r()
		})
		f.queued(t, tenant, queuedBefore+1)
	}
	// Tenant 1 floods first; tenant 2's one task comes last, and is served second.
	wait(1, "a1", 0)
	wait(1, "a2", 1)
	wait(1, "a3", 2)
	wait(2, "b1", 0)
	require.Equal(t, 4, f.waitingTasks())
	release()
	wg.Wait()
	require.Equal(t, []string{"a1", "b1", "a2", "a3"}, order)

	// Every slot came back.
	f.mu.Lock()
	defer f.mu.Unlock()
	require.Equal(t, 1, f.free)
	require.Empty(t, f.turns)
	require.Empty(t, f.waiting)
}

func TestFairSlots_AWaitCutShort_LeavesTheLineAndLosesNoSlot(t *testing.T) {
	t.Parallel()
	f := newFairSlots(1)
	release, err := f.acquire(t.Context(), 1)
	require.NoError(t, err)

	ctx, cancel := context.WithCancel(t.Context())
	gaveUp := make(chan error, 1)
	go func() {
		_, err := f.acquire(ctx, 2)
		gaveUp <- err
	}()
	f.queued(t, 2, 1)
	cancel()
	require.ErrorIs(t, <-gaveUp, context.Canceled)
	f.queued(t, 2, 0)

	got := make(chan struct{})
	go func() {
		r, err := f.acquire(t.Context(), 3)
		if err == nil {
			r()
		}
		close(got)
	}()
	f.queued(t, 3, 1)
	release()
	<-got
	f.mu.Lock()
	defer f.mu.Unlock()
	require.Equal(t, 1, f.free, "the slot came back")
	require.Empty(t, f.turns)
}
