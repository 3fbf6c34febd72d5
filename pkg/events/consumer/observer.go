package consumer

import (
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Outcomes of a message.
const (
	OutcomeAcked        = "acked"
	OutcomeRetried      = "retried"
	OutcomeDeadLettered = "dead_lettered"
)

// Observer is told what became of the messages a consumer handled, n at a time, and how long
// their handling took, for metrics. When the consumer starts it is told each outcome once with
// n = 0, so that metrics can show every outcome's series before its first message (an alert on
// their rate then sees the first one). Nil observes nothing.
type Observer interface {
	Observe(consumer, outcome string, n int, took time.Duration)
}

// LagObserver is an Observer that also reports how far behind a consumer is: a consumer hands
// it its JetStream consumer when it starts, to ask for the messages it has yet to deliver and
// to have acknowledged, and calls the returned unwatch when it stops.
type LagObserver interface {
	Observer
	Watch(consumer string, c jetstream.Consumer) (unwatch func())
}

// announce tells observer, if any, each outcome of consumer with n = 0, and hands it cons if it
// is a LagObserver. The caller calls the returned func when the consumer stops.
func announce(observer Observer, consumer string, cons jetstream.Consumer) (stop func()) {
	if observer == nil {
		return func() {}
	}
	for _, outcome := range []string{OutcomeAcked, OutcomeRetried, OutcomeDeadLettered} {
		observer.Observe(consumer, outcome, 0, 0)
	}
	if lo, ok := observer.(LagObserver); ok {
		return lo.Watch(consumer, cons)
	}
	return func() {}
}
