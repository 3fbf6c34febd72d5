package converger

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/convergence-dev/convergence/internal/telemetry"
)

// metrics are the converger's own metrics; the consumer adapter counts messages, and the
// webhook deliverer its attempts.
type metrics struct {
	inFlight prometheus.Gauge
	finished *prometheus.CounterVec
	skipped  prometheus.Counter
	rounds   prometheus.Counter
	tokens   *prometheus.CounterVec
	duration prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer, turns *fairSlots) *metrics {
	const sub = "converger"
	telemetry.Register(reg, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: telemetry.Namespace, Subsystem: sub, Name: "tasks_waiting",
		Help: "Tasks this process holds waiting for their turn, which goes to the waiting tenants in turn.",
	}, func() float64 { return float64(turns.waitingTasks()) }))
	return &metrics{
		inFlight: telemetry.Register(reg, prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: telemetry.Namespace, Subsystem: sub, Name: "tasks_in_flight",
			Help: "Tasks this process is running.",
		})),
		finished: telemetry.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: telemetry.Namespace, Subsystem: sub, Name: "tasks_finished_total",
			Help: "Tasks finished, by status and stop reason.",
		}, []string{"status", "stop_reason"})),
		skipped: telemetry.Register(reg, prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: telemetry.Namespace, Subsystem: sub, Name: "requests_skipped_total",
			Help: "Requests acknowledged without running because their task had already finished.",
		})),
		rounds: telemetry.Register(reg, prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: telemetry.Namespace, Subsystem: sub, Name: "rounds_total",
			Help: "Rounds scored and persisted.",
		})),
		tokens: telemetry.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: telemetry.Namespace, Subsystem: sub, Name: "tokens_total",
			Help: "Tokens billed for finished tasks, by provider and kind (input, output, cached).",
		}, []string{"provider", "kind"})),
		duration: telemetry.Register(reg, prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: telemetry.Namespace, Subsystem: sub, Name: "task_duration_seconds",
			Help:    "Wall time of a task from its first start to its end.",
			Buckets: prometheus.ExponentialBuckets(0.05, 2.5, 12),
		})),
	}
}
