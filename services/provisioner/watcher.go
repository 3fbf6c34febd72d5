package provisioner

import (
	"context"
	"sync"
	"time"

	"github.com/convergence-dev/convergence/services/provisioner/runtime"
)

// Watcher timing.
const (
	// eventSettle lets a burst of engine events about one tenant (die, start, health) settle
	// into one check.
	eventSettle = 250 * time.Millisecond
	// busyRetry is when a tenant whose lock was busy at an event is checked again.
	busyRetry = time.Second
	// resubscribeDelay is the pause before subscribing again to a broken event stream.
	resubscribeDelay = time.Second
	// checkParallelism bounds the tenants checked at once.
	checkParallelism = 8
)

// watcher is the health watcher: it checks every watched tenant each HealthInterval, and a
// tenant soon after the engine reports an event about its container (start, die, OOM, health
// status, destroy).
type watcher struct {
	s       *Service
	mu      sync.Mutex
	pending map[int64]struct{}
	wg      sync.WaitGroup
	sem     chan struct{}
}

func newWatcher(s *Service) *watcher {
	return &watcher{s: s, pending: map[int64]struct{}{}, sem: make(chan struct{}, checkParallelism)}
}

// run watches until ctx is done and returns once its checks in flight have ended. evs and
// errs are the engine event stream ([runtime.Runtime.Events]); when it breaks, run subscribes
// again and checks every tenant, to cover what it missed.
func (w *watcher) run(ctx context.Context, evs <-chan runtime.Event, errs <-chan error) {
	defer w.wg.Wait()
	tick := time.NewTicker(w.s.cfg.HealthInterval)
	defer tick.Stop()
	settle := time.NewTimer(time.Hour)
	settle.Stop()
	var resubscribe <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-evs:
			if !ok {
				evs, errs = nil, nil
				resubscribe = time.After(resubscribeDelay)
				continue
			}
			if ev.EnvID > 0 {
				w.mark(ev.EnvID)
				settle.Reset(eventSettle)
			}
		case err, ok := <-errs:
			if ok && err != nil {
				w.s.log.Warn("docker event stream broke; subscribing again", "err", err)
			}
			errs = nil // evs closes next
		case <-resubscribe:
			resubscribe = nil
			evs, errs = w.s.rt.Events(ctx)
			w.checkAll(ctx)
		case <-settle.C:
			if w.flush(ctx) {
				settle.Reset(busyRetry)
			}
		case <-tick.C:
			w.checkAll(ctx)
		}
	}
}

func (w *watcher) mark(envID int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.pending[envID] = struct{}{}
}

// flush checks the tenants marked by events. It reports whether some were busy and stay
// marked.
func (w *watcher) flush(ctx context.Context) (busy bool) {
	w.mu.Lock()
	ids := make([]int64, 0, len(w.pending))
	for id := range w.pending {
		ids = append(ids, id)
	}
	clear(w.pending)
	w.mu.Unlock()
	for _, id := range ids {
		unlock, ok := w.s.locks.tryLock(id)
		if !ok {
			// A spawn, destroy or reconcile holds it; whatever it does, look again after.
			w.mark(id)
			busy = true
			continue
		}
		w.check(ctx, id, unlock)
	}
	return busy
}

// checkAll checks every watched tenant whose lock is free.
func (w *watcher) checkAll(ctx context.Context) {
	tenants, err := w.s.loadTenants(ctx, nil)
	if err != nil {
		if ctx.Err() == nil {
			w.s.log.Warn("health watcher: load tenants", "err", err)
		}
		return
	}
	for _, t := range tenants {
		if !watched(t) {
			continue
		}
		if unlock, ok := w.s.locks.tryLock(t.ID); ok {
			w.check(ctx, t.ID, unlock)
		}
	}
}

// check observes one tenant on a goroutine of its own, holding the lock the caller took.
func (w *watcher) check(ctx context.Context, envID int64, unlock func()) {
	select {
	case w.sem <- struct{}{}:
	case <-ctx.Done():
		unlock()
		return
	}
	w.wg.Go(func() {
		defer func() { <-w.sem }()
		defer unlock()
		t, err := w.s.loadTenant(ctx, envID)
		if err != nil {
			return // Not ours (a test's, another installation's) or gone.
		}
		if !watched(t) {
			return
		}
		if err := w.s.observe(ctx, t); err != nil && ctx.Err() == nil {
			w.s.log.Warn("health check", "envId", envID, "err", err)
		}
	})
}
