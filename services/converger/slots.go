package converger

import (
	"context"
	"slices"
	"sync"
)

// fairSlots hands out a fixed number of slots to tasks, tenant by tenant in turn: while tasks
// wait, a freed slot goes to the first waiting task of the tenant whose turn it is, and that
// tenant goes to the back of the line. A tenant with a hundred tasks waiting and one with one
// each get every other slot, so one tenant's flood does not starve the rest. A tenant's own
// tasks keep their order.
type fairSlots struct {
	mu   sync.Mutex
	free int
	// waiting holds each tenant's waiting tasks in order; turns, the tenants with waiting
	// tasks in the order they are served.
	waiting map[int64][]*slotWaiter
	turns   []int64
}

type slotWaiter struct {
	ready   chan struct{} // closed when granted is set
	granted bool
}

func newFairSlots(n int) *fairSlots {
	return &fairSlots{free: n, waiting: map[int64][]*slotWaiter{}}
}

// acquire waits for a slot for a task of tenant, or until ctx is done, and returns the slot's
// release, which must be called once.
func (f *fairSlots) acquire(ctx context.Context, tenant int64) (release func(), err error) {
	f.mu.Lock()
	if f.free > 0 && len(f.turns) == 0 {
		f.free--
		f.mu.Unlock()
		return f.release, nil
	}
	w := &slotWaiter{ready: make(chan struct{})}
	if len(f.waiting[tenant]) == 0 {
		f.turns = append(f.turns, tenant)
	}
	f.waiting[tenant] = append(f.waiting[tenant], w)
	f.mu.Unlock()

	select {
	case <-w.ready:
		return f.release, nil
	case <-ctx.Done():
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if w.granted {
		// Granted as ctx ended: pass the slot on.
		f.handOver()
		return nil, context.Cause(ctx)
	}
	f.waiting[tenant] = slices.DeleteFunc(f.waiting[tenant], func(o *slotWaiter) bool { return o == w })
	if len(f.waiting[tenant]) == 0 {
		delete(f.waiting, tenant)
		f.turns = slices.DeleteFunc(f.turns, func(t int64) bool { return t == tenant })
	}
	return nil, context.Cause(ctx)
}

// release gives a slot back: to the next waiting task, if any.
func (f *fairSlots) release() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.handOver()
}

// handOver grants a freed slot to the first task of the tenant whose turn it is, or keeps it
// free when nobody waits. f.mu is held.
func (f *fairSlots) handOver() {
	if len(f.turns) == 0 {
		f.free++
		return
	}
	tenant := f.turns[0]
	f.turns = f.turns[1:]
	queue := f.waiting[tenant]
	w := queue[0]
	if len(queue) == 1 {
		delete(f.waiting, tenant)
	} else {
		f.waiting[tenant] = queue[1:]
		f.turns = append(f.turns, tenant) // To the back of the line.
	}
	w.granted = true
	close(w.ready)
}

// waitingTasks counts the tasks waiting for a slot.
func (f *fairSlots) waitingTasks() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, q := range f.waiting {
		n += len(q)
	}
	return n
}
