package consumer

import "time"

// Outcomes of a message.
const (
	OutcomeAcked        = "acked"
	OutcomeRetried      = "retried"
	OutcomeDeadLettered = "dead_lettered"
)

// Observer is told what became of the messages a consumer handled, n at a time, and how long
// their handling took, for metrics. Nil observes nothing.
type Observer interface {
	Observe(consumer, outcome string, n int, took time.Duration)
}
