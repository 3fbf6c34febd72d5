package telemetry

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// ConsumerMetrics counts the messages JetStream consumers handled, per consumer and outcome,
// and times their handlers. It is a consumer.Observer.
type ConsumerMetrics struct {
	handled  *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

// NewConsumerMetrics registers the consumer metrics with reg, or reuses those already
// registered, so every consumer of a process shares them.
func NewConsumerMetrics(reg prometheus.Registerer) *ConsumerMetrics {
	return &ConsumerMetrics{
		handled: Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Subsystem: "consumer", Name: "messages_total",
			Help: "Messages handled, by consumer and outcome (acked, retried, dead_lettered).",
		}, []string{"consumer", "outcome"})),
		duration: Register(reg, prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: Namespace, Subsystem: "consumer", Name: "handle_duration_seconds",
			Help:    "Time spent handling one message, by consumer.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 4, 12),
		}, []string{"consumer"})),
	}
}

// Observe counts n messages of consumer and their outcome, handled in took. n = 0 only makes
// the outcome's series exist.
func (m *ConsumerMetrics) Observe(consumer, outcome string, n int, took time.Duration) {
	m.handled.WithLabelValues(consumer, outcome).Add(float64(n))
	if n > 0 {
		m.duration.WithLabelValues(consumer).Observe(took.Seconds())
	}
}
