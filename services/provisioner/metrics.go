package provisioner

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/convergence-dev/convergence/internal/telemetry"
	"github.com/convergence-dev/convergence/services/provisioner/runtime"
)

// metrics are the provisioner's own metrics; the consumer adapter counts commands. No metric
// carries a tenant id.
type metrics struct {
	spawnSeconds     *prometheus.HistogramVec
	transitions      *prometheus.CounterVec
	reconcileActions *prometheus.CounterVec
	reconcileSeconds prometheus.Histogram
	tenants          *prometheus.GaugeVec
}

// Repairs the reconciler makes, the values of reconcile_actions_total's action label.
const (
	actionRecreate                = "recreate"
	actionRemoveDestroyedLeftover = "remove_destroyed_leftover"
	actionRemoveOrphan            = "remove_orphan"
	actionDestroy                 = "destroy"
	actionResume                  = "resume"
	actionFailStuck               = "fail_stuck"
	actionReinstallEgressPolicy   = "reinstall_egress_policy"
	actionDeliverKey              = "deliver_key"
)

func newMetrics(reg prometheus.Registerer, rt runtime.Runtime) *metrics {
	// Only bridge networks can have duplicates: swarm refuses a second network of one name.
	duplicates := func() float64 { return 0 }
	if d, ok := rt.(interface{ DuplicateNetworksRemoved() uint64 }); ok {
		duplicates = func() float64 { return float64(d.DuplicateNetworksRemoved()) }
	}
	telemetry.Register(reg, prometheus.NewCounterFunc(prometheus.CounterOpts{
		Namespace: telemetry.Namespace, Subsystem: "provisioner", Name: "duplicate_networks_removed_total",
		Help: "Empty duplicates of a tenant network's name removed (the engine allows two networks of one name to clients that skip its check).",
	}, duplicates))
	m := &metrics{
		spawnSeconds: telemetry.Register(reg, prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: telemetry.Namespace, Subsystem: "provisioner", Name: "spawn_duration_seconds",
			Help:    "Time from taking a spawn to its outcome (running or error), by outcome.",
			Buckets: prometheus.ExponentialBuckets(0.05, 2, 12),
		}, []string{"outcome"})),
		transitions: telemetry.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: telemetry.Namespace, Subsystem: "provisioner", Name: "lifecycle_transitions_total",
			Help: "Tenant state changes recorded, by the state entered.",
		}, []string{"state"})),
		reconcileActions: telemetry.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: telemetry.Namespace, Subsystem: "provisioner", Name: "reconcile_actions_total",
			Help: "Repairs made by the reconciler, by action.",
		}, []string{"action"})),
		reconcileSeconds: telemetry.Register(reg, prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: telemetry.Namespace, Subsystem: "provisioner", Name: "reconcile_duration_seconds",
			Help:    "Time one reconcile pass took.",
			Buckets: prometheus.ExponentialBuckets(0.01, 4, 8),
		})),
		tenants: telemetry.Register(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: telemetry.Namespace, Subsystem: "provisioner", Name: "tenants",
			Help: "Tenants that are not destroyed, by status, as of the last reconcile.",
		}, []string{"status"})),
	}
	// Every repair's series exists from the start, so an alert sees the first one.
	for _, action := range []string{actionRecreate, actionRemoveDestroyedLeftover, actionRemoveOrphan, actionDestroy, actionResume, actionFailStuck, actionReinstallEgressPolicy, actionDeliverKey} {
		m.reconcileActions.WithLabelValues(action)
	}
	return m
}
