package metering

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/convergence-dev/convergence/internal/telemetry"
)

// metrics are the metering's Prometheus metrics. Labels name the source stream and the
// outcome, never a tenant, a model or anything else an event chooses.
type metrics struct {
	events            *prometheus.CounterVec
	refused           *prometheus.CounterVec
	lines             *prometheus.CounterVec
	batchMessages     *prometheus.HistogramVec
	batchDuration     *prometheus.HistogramVec
	writeRetries      *prometheus.CounterVec
	unpricedLines     prometheus.Counter
	unpricedTokens    prometheus.Counter
	unpricedModels    prometheus.Gauge
	priceVersion      prometheus.Gauge
	priceReloadErrors prometheus.Counter
	mergedRows        prometheus.Counter
	mergeDuration     prometheus.Histogram
	mergeErrors       prometheus.Counter
	// budgetReservations counts reservations by outcome: reserved, refused, released.
	budgetReservations *prometheus.CounterVec
	// reconcileGaps and reconcileChecked are the last reconciliation check's gaps by kind
	// and when it ended; reconcileErrors counts checks that failed.
	reconcileGaps    *prometheus.GaugeVec
	reconcileChecked prometheus.Gauge
	reconcileErrors  prometheus.Counter
}

// Event outcomes.
const (
	outcomeRecorded     = "recorded"
	outcomeDuplicate    = "duplicate"
	outcomeConflict     = "conflict"
	outcomeDeadLettered = "dead_lettered"
	outcomeRetried      = "retried"
	outcomeRefused      = "refused"
)

func newMetrics(reg prometheus.Registerer) *metrics {
	const ns, sub = telemetry.Namespace, "metering"
	m := &metrics{
		events: telemetry.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "events_total",
			Help: "Source events handled, by source (results, lifecycle) and outcome (recorded, duplicate, conflict, refused, dead_lettered, retried).",
		}, []string{"source", "outcome"})),
		refused: telemetry.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "results_refused_total",
			Help: "Convergence results not billed because the converger's task record does not vouch for them, by reason.",
		}, []string{"reason"})),
		lines: telemetry.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "ledger_lines_total",
			Help: "Ledger lines written, by source.",
		}, []string{"source"})),
		batchMessages: telemetry.Register(reg, prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: ns, Subsystem: sub, Name: "batch_messages",
			Help:    "Messages per ingest batch, by source.",
			Buckets: prometheus.ExponentialBuckets(1, 4, 7),
		}, []string{"source"})),
		batchDuration: telemetry.Register(reg, prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: ns, Subsystem: sub, Name: "batch_duration_seconds",
			Help:    "Time from pulling a batch to acknowledging it, by source.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 4, 10),
		}, []string{"source"})),
		writeRetries: telemetry.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "write_retries_total",
			Help: "Ledger transactions retried after a failure that was not the events' fault, by source.",
		}, []string{"source"})),
		unpricedLines: telemetry.Register(reg, prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "unpriced_lines_total",
			Help: "Usage lines recorded for a model the price table does not price.",
		})),
		unpricedTokens: telemetry.Register(reg, prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "unpriced_tokens_total",
			Help: "Tokens recorded for a model the price table does not price.",
		})),
		unpricedModels: telemetry.Register(reg, prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "unpriced_models",
			Help: "Models with usage still unpriced; GET /api/v1/usage/unpriced lists them.",
		})),
		priceVersion: telemetry.Register(reg, prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "price_version",
			Help: "ID of the price version new usage is priced at.",
		})),
		priceReloadErrors: telemetry.Register(reg, prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "price_reload_errors_total",
			Help: "Changed price files that could not be loaded; the prices in force stay.",
		})),
		budgetReservations: telemetry.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "budget_reservations_total",
			Help: "Reservations of runs' worst-case cost against budgets, by outcome: reserved, refused (over a limit), released (a run not accepted after all).",
		}, []string{"outcome"})),
		mergedRows: telemetry.Register(reg, prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "rollup_merged_rows_total",
			Help: "Rollup deltas merged into the daily and monthly rollups.",
		})),
		mergeDuration: telemetry.Register(reg, prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: ns, Subsystem: sub, Name: "rollup_merge_duration_seconds",
			Help:    "Time one merge of the pending rollup deltas takes.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 4, 10),
		})),
		reconcileGaps: telemetry.Register(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "reconcile_gaps",
			Help: "Tasks on which the ledger and the converger's records disagreed at this process's last reconciliation check, by kind (missing, mismatched, orphaned).",
		}, []string{"kind"})),
		reconcileChecked: telemetry.Register(reg, prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "reconcile_checked_timestamp_seconds",
			Help: "When this process's last reconciliation check ended (Unix seconds; 0 before its first).",
		})),
		reconcileErrors: telemetry.Register(reg, prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "reconcile_check_errors_total",
			Help: "Reconciliation checks that failed (the converger did not answer, or the database).",
		})),
		mergeErrors: telemetry.Register(reg, prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "rollup_merge_errors_total",
			Help: "Merges of the pending rollup deltas that failed; the deltas stay pending, and reads stay right.",
		})),
	}
	// The series alerts watch exist from the start, so the first conflict shows as a change.
	for _, source := range []string{"results", "lifecycle"} {
		m.events.WithLabelValues(source, outcomeConflict)
		m.events.WithLabelValues(source, outcomeDeadLettered)
	}
	for _, reason := range refusalReasons() {
		m.refused.WithLabelValues(reason)
	}
	for _, outcome := range []string{"reserved", "refused", "released"} {
		m.budgetReservations.WithLabelValues(outcome)
	}
	for _, kind := range []string{gapMissing, gapMismatched, gapOrphaned} {
		m.reconcileGaps.WithLabelValues(kind)
	}
	return m
}
