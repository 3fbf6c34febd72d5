package consumer

import "time"

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

// announce tells observer, if any, each outcome of consumer with n = 0.
func announce(observer Observer, consumer string) {
	if observer == nil {
		return
	}
	for _, outcome := range []string{OutcomeAcked, OutcomeRetried, OutcomeDeadLettered} {
		observer.Observe(consumer, outcome, 0, 0)
	}
}
