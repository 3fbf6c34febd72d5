package api

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/convergence-dev/convergence/internal/httpx"
	"github.com/convergence-dev/convergence/pkg/events"
)

// backlogRefresh is how long the backlog trusts its last look at the converger's consumer.
const backlogRefresh = 250 * time.Millisecond

// backlog is the platform's admission limit for convergence tasks: it admits a new task while
// the converge requests that the converger's consumer holds, queued or running, are fewer than
// limit, and answers 429 beyond it. The converger processes take a bounded number of tasks
// each (their concurrency), so this bounds what waits in JetStream, and the time a new
// task waits there, whatever the tenants send.
//
// It looks at the consumer at most every backlogRefresh and counts the tasks it admits in
// between, so a burst costs one lookup. Several API replicas each count their own: together
// they may overshoot by what they admit within one refresh.
type backlog struct {
	js    jetstream.JetStream
	limit uint64

	mu      sync.Mutex
	held    uint64
	checked time.Time
}

func newBacklog(js jetstream.JetStream, limit int) *backlog {
	return &backlog{js: js, limit: uint64(limit)}
}

// admit counts one more task, or returns the 429 that refuses it.
func (b *backlog) admit(ctx context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if time.Since(b.checked) >= backlogRefresh {
		// No answer (no converger has created its consumer yet, or JetStream is slow) admits
		// on the last count: the request is stored in the stream either way.
		if held, err := b.look(ctx); err == nil {
			b.held, b.checked = held, time.Now()
		}
	}
	if b.held >= b.limit {
		return &httpx.Error{
			Status: http.StatusTooManyRequests,
			Code:   "backlog_full",
			Message: fmt.Sprintf("the platform holds %d convergence tasks, queued or running, its limit; retry after a second, "+
				"or ask the operator to add converger capacity", b.held),
			RetryAfter: time.Second,
		}
	}
	b.held++
	return nil
}

// look returns the converge requests the converger's consumer holds: not yet delivered, or
// delivered and not yet acknowledged.
func (b *backlog) look(ctx context.Context) (uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	c, err := b.js.Consumer(ctx, events.StreamConvergeCommands, events.ConsumerConverger)
	if err != nil {
		return 0, err
	}
	info := c.CachedInfo()
	return info.NumPending + uint64(info.NumAckPending), nil
}
