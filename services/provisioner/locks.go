package provisioner

import (
	"context"
	"sync"
)

// tenantLocks serializes the work on each tenant inside one provisioner: a spawn, a destroy,
// a health check and a reconcile of the same tenant never overlap, as the runtime requires.
// Across replicas, the conditional updates of apply and the reconciler keep the database
// right, and the reconciler removes what a lost race left behind.
//
// A holder may register a cancel function; interrupt calls it, so a destroy does not wait out
// a spawn that is still waiting for health.
type tenantLocks struct {
	mu sync.Mutex
	m  map[int64]*tenantLock
}

type tenantLock struct {
	sem    chan struct{} // holds one token while locked
	refs   int           // holders and waiters; the entry goes when it drops to zero
	cancel context.CancelFunc
}

func newTenantLocks() *tenantLocks { return &tenantLocks{m: map[int64]*tenantLock{}} }

func (l *tenantLocks) entry(id int64) *tenantLock {
	l.mu.Lock()
	defer l.mu.Unlock()
	e, ok := l.m[id]
	if !ok {
		e = &tenantLock{sem: make(chan struct{}, 1)}
		l.m[id] = e
	}
	e.refs++
	return e
}

func (l *tenantLocks) done(id int64, e *tenantLock) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if e.refs--; e.refs == 0 {
		delete(l.m, id)
	}
}

// lock blocks until the tenant is free or ctx is done. cancel, when not nil, is what
// interrupt calls while this holder has the lock. The returned unlock must be called once.
func (l *tenantLocks) lock(ctx context.Context, id int64, cancel context.CancelFunc) (unlock func(), err error) {
	e := l.entry(id)
	select {
	case e.sem <- struct{}{}:
	case <-ctx.Done():
		l.done(id, e)
		return nil, ctx.Err()
	}
	return l.hold(id, e, cancel), nil
}

// tryLock takes the tenant's lock if it is free.
func (l *tenantLocks) tryLock(id int64) (unlock func(), ok bool) {
	e := l.entry(id)
	select {
	case e.sem <- struct{}{}:
		return l.hold(id, e, nil), true
	default:
		l.done(id, e)
		return nil, false
	}
}

func (l *tenantLocks) hold(id int64, e *tenantLock, cancel context.CancelFunc) func() {
	l.mu.Lock()
	e.cancel = cancel
	l.mu.Unlock()
	return func() {
		l.mu.Lock()
		e.cancel = nil
		l.mu.Unlock()
		<-e.sem
		l.done(id, e)
	}
}

// interrupt cancels the work of the tenant's current holder, if it registered a cancel.
func (l *tenantLocks) interrupt(id int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if e, ok := l.m[id]; ok && e.cancel != nil {
		e.cancel()
	}
}
