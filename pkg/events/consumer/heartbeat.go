package consumer

import (
	"context"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// heartbeats keeps the messages a consumer holds from being redelivered while their handlers
// run, however long they take: every interval it sends InProgress for each message held. One
// goroutine serves every message, so a consumer that holds thousands at once (a converger's
// tasks) does not keep a goroutine and a timer for each.
type heartbeats struct {
	mu   sync.Mutex
	held map[jetstream.Msg]struct{}
}

func newHeartbeats() *heartbeats {
	return &heartbeats{held: map[jetstream.Msg]struct{}{}}
}

// hold keeps msgs alive until the returned release is called.
func (h *heartbeats) hold(msgs ...jetstream.Msg) (release func()) {
	h.mu.Lock()
	for _, m := range msgs {
		h.held[m] = struct{}{}
	}
	h.mu.Unlock()
	return func() {
		h.mu.Lock()
		for _, m := range msgs {
			delete(h.held, m)
		}
		h.mu.Unlock()
	}
}

// run sends the heartbeats every interval until ctx is done. A message acknowledged between
// the copy and its heartbeat sends nothing: the client knows it was acknowledged.
func (h *heartbeats) run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	var msgs []jetstream.Msg
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		h.mu.Lock()
		msgs = msgs[:0]
		for m := range h.held {
			msgs = append(msgs, m)
		}
		h.mu.Unlock()
		for _, m := range msgs {
			_ = m.InProgress()
		}
	}
}
