package consumer

import "time"

// Outcomes of a message.
const (
	OutcomeAcked        = "acked"
	OutcomeRetried      = "retried"
	OutcomeDeadLettered = "dead_lettered"
)

// Observer is told what became of every message a consumer handled, and how long that took,
// for metrics. Nil observes nothing.
type Observer interface {
	Observe(consumer, outcome string, took time.Duration)
}
