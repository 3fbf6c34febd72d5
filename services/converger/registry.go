package converger

import (
	"context"
	"sync"
)

// registry holds the cancel functions of the tasks this process runs, so a cancel request
// received on core NATS reaches the run. A task may briefly run twice in one process (a
// redelivery while a lost run winds down), so a task ID maps to every run of it.
type registry struct {
	mu    sync.Mutex
	tasks map[string]map[*entry]struct{}
}

type entry struct{ cancel context.CancelCauseFunc }

func newRegistry() *registry { return &registry{tasks: map[string]map[*entry]struct{}{}} }

// add registers a run of task id and returns the function that removes it.
func (r *registry) add(id string, cancel context.CancelCauseFunc) (remove func()) {
	e := &entry{cancel: cancel}
	r.mu.Lock()
	runs := r.tasks[id]
	if runs == nil {
		runs = map[*entry]struct{}{}
		r.tasks[id] = runs
	}
	runs[e] = struct{}{}
	r.mu.Unlock()
	return func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		delete(r.tasks[id], e)
		if len(r.tasks[id]) == 0 {
			delete(r.tasks, id)
		}
	}
}

// cancel cancels every run of task id in this process with cause, and reports whether there
// was one.
func (r *registry) cancel(id string, cause error) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for e := range r.tasks[id] {
		e.cancel(cause)
	}
	return len(r.tasks[id]) > 0
}
