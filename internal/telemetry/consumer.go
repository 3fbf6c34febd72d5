package telemetry

import (
	"context"
	"maps"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

// ConsumerMetrics counts the messages JetStream consumers handled, per consumer and outcome,
// times their handlers, and reports how far behind each consumer is. It is a
// consumer.LagObserver.
type ConsumerMetrics struct {
	handled  *prometheus.CounterVec
	duration *prometheus.HistogramVec
	lag      *consumerLag
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
		lag: Register(reg, &consumerLag{watched: map[string]jetstream.Consumer{}}),
	}
}

// Watch reports c's backlog as consumer's until unwatch is called.
func (m *ConsumerMetrics) Watch(consumer string, c jetstream.Consumer) (unwatch func()) {
	m.lag.mu.Lock()
	defer m.lag.mu.Unlock()
	m.lag.watched[consumer] = c
	return func() {
		m.lag.mu.Lock()
		defer m.lag.mu.Unlock()
		delete(m.lag.watched, consumer)
	}
}

var (
	pendingDesc = prometheus.NewDesc(Namespace+"_consumer_pending_messages",
		"Messages of a consumer's stream it has yet to deliver, as JetStream counts them at the scrape.",
		[]string{"consumer"}, nil)
	ackPendingDesc = prometheus.NewDesc(Namespace+"_consumer_ack_pending_messages",
		"Messages a consumer delivered and has yet to have acknowledged, as JetStream counts them at the scrape.",
		[]string{"consumer"}, nil)
)

// consumerLag asks JetStream, at each scrape, for the backlog of every consumer this process
// runs. A consumer that does not answer within two seconds is left out of that scrape.
type consumerLag struct {
	mu      sync.Mutex
	watched map[string]jetstream.Consumer
}

func (l *consumerLag) Describe(ch chan<- *prometheus.Desc) {
	ch <- pendingDesc
	ch <- ackPendingDesc
}

func (l *consumerLag) Collect(ch chan<- prometheus.Metric) {
	l.mu.Lock()
	watched := maps.Clone(l.watched)
	l.mu.Unlock()
	for name, c := range watched {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		info, err := c.Info(ctx)
		cancel()
		if err != nil {
			continue
		}
		ch <- prometheus.MustNewConstMetric(pendingDesc, prometheus.GaugeValue, float64(info.NumPending), name)
		ch <- prometheus.MustNewConstMetric(ackPendingDesc, prometheus.GaugeValue, float64(info.NumAckPending), name)
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
