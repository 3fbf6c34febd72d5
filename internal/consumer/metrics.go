package consumer

import (
	"time"

	"github.com/convergence-dev/convergence/internal/telemetry"
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics counts handled messages per consumer and outcome, and times the handlers.
type Metrics struct {
	handled  *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

// NewMetrics registers the consumer metrics with reg, or reuses those already registered.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	return &Metrics{
		handled: telemetry.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: telemetry.Namespace, Subsystem: "consumer", Name: "messages_total",
			Help: "Messages handled, by consumer and outcome (acked, retried, dead_lettered).",
		}, []string{"consumer", "outcome"})),
		duration: telemetry.Register(reg, prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: telemetry.Namespace, Subsystem: "consumer", Name: "handle_duration_seconds",
			Help:    "Time spent handling one message, by consumer.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 4, 12),
		}, []string{"consumer"})),
	}
}

func (m *Metrics) observe(consumer, outcome string, start time.Time) {
	if m == nil {
		return
	}
	m.handled.WithLabelValues(consumer, outcome).Inc()
	m.duration.WithLabelValues(consumer).Observe(time.Since(start).Seconds())
}
