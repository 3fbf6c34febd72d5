// Package leader elects, among the replicas of a service, the one that runs work that must run
// once (the provisioner's reconciler and health watcher), with a PostgreSQL session advisory
// lock: the replica whose connection holds the lock leads, and the lock goes with the
// connection when the leader stops, dies or loses its database. A leader's host that vanishes
// without closing its connection (power, network) leaves the server a session that goes
// quiet: the connection asks the server to end it after idleSessionTimeout without a query,
// and the leader pings far more often than that.
//
// The election is a lease with PostgreSQL as the referee, not a fence: a leader that loses its
// connection learns of it at its next check, up to CheckEvery later, while another replica may
// already lead. The work it guards must therefore stay safe when two replicas overlap for that
// long; the elections spare the work, not the correctness.
package leader

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/convergence-dev/convergence/internal/telemetry"
)

// Defaults for [Election].
const (
	// DefaultCheckEvery is how often a leader checks that its connection, and so its lock,
	// is still there.
	DefaultCheckEvery = 2 * time.Second
	// DefaultRetryEvery is how often a replica that does not lead tries to.
	DefaultRetryEvery = 5 * time.Second
)

// idleSessionTimeout ends, on the server, a lock's session that has sent no query for that
// long (PostgreSQL 14 and later): a leader checks every CheckEvery, so only a leader that is
// gone is that quiet, and its lock is free again within this much.
const idleSessionTimeout = "20s"

// Election is one role to lead. The zero CheckEvery and RetryEvery take the defaults.
type Election struct {
	// Role names the work; replicas that elect the same role in the same database compete.
	// It is the metric's role label too.
	Role       string
	CheckEvery time.Duration
	RetryEvery time.Duration
}

// Metrics counts the elections of a process: convergence_leader{role} is 1 while this process
// leads the role, and convergence_leader_terms_total{role} counts the terms it began.
type Metrics struct {
	leading *prometheus.GaugeVec
	terms   *prometheus.CounterVec
}

// NewMetrics registers the election metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	return &Metrics{
		leading: telemetry.Register(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: telemetry.Namespace, Name: "leader",
			Help: "1 while this process leads the role (runs its once-only work), else 0.",
		}, []string{"role"})),
		terms: telemetry.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: telemetry.Namespace, Subsystem: "leader", Name: "terms_total",
			Help: "Terms this process began as leader of the role.",
		}, []string{"role"})),
	}
}

// Run competes for the role until ctx is done and calls lead, with a context that ends with
// the term, each time this process wins it. lead must return soon after its context ends; a
// term ends when ctx is done or the lock's connection fails, and the next one may begin on
// any replica. Run returns nil once ctx is done and the last term's lead has returned.
func (e Election) Run(ctx context.Context, pool *pgxpool.Pool, m *Metrics, log *slog.Logger, lead func(context.Context)) error {
	if e.Role == "" {
		return errors.New("leader: an election needs a role")
	}
	checkEvery := cmp.Or(e.CheckEvery, DefaultCheckEvery)
	retryEvery := cmp.Or(e.RetryEvery, DefaultRetryEvery)
	if checkEvery >= 10*time.Second {
		return fmt.Errorf("leader: CheckEvery %s: a leader must check more often than every 10s, or the server ends its quiet session (idle_session_timeout %s)", checkEvery, idleSessionTimeout)
	}
	log = log.With("role", e.Role)
	m.leading.WithLabelValues(e.Role).Set(0)
	m.terms.WithLabelValues(e.Role)
	for {
		conn, won, err := e.try(ctx, pool)
		switch {
		case err != nil && ctx.Err() == nil:
			log.Warn("leader election: cannot ask the database; trying again", "err", err, "in", retryEvery)
		case won:
			e.serve(ctx, conn, checkEvery, m, log, lead)
		}
		if conn != nil {
			closeQuietly(conn)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(retryEvery):
		}
	}
}

// try opens a connection of its own (a pooled one would go back to the pool with the lock)
// and tries to take the role's lock on it. The caller closes conn when it is not nil.
func (e Election) try(ctx context.Context, pool *pgxpool.Pool) (conn *pgx.Conn, won bool, err error) {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cfg := pool.Config().ConnConfig.Copy()
	cfg.RuntimeParams["idle_session_timeout"] = idleSessionTimeout
	conn, err = pgx.ConnectConfig(cctx, cfg)
	if err != nil {
		return nil, false, err
	}
	if err := conn.QueryRow(cctx, `SELECT pg_try_advisory_lock(hashtextextended($1, 0))`, "leader:"+e.Role).Scan(&won); err != nil {
		return conn, false, fmt.Errorf("take the lock: %w", err)
	}
	return conn, won, nil
}

// serve runs one term: lead runs until ctx is done or conn stops answering.
func (e Election) serve(ctx context.Context, conn *pgx.Conn, checkEvery time.Duration, m *Metrics, log *slog.Logger, lead func(context.Context)) {
	// The metrics say so before the work begins, so that no leader's work runs unseen.
	m.leading.WithLabelValues(e.Role).Set(1)
	m.terms.WithLabelValues(e.Role).Inc()
	log.Info("leading")
	term, end := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { lead(term) })
	defer func() {
		end()
		wg.Wait()
		m.leading.WithLabelValues(e.Role).Set(0)
	}()
	t := time.NewTicker(checkEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			log.Info("no longer leading: stopping")
			return
		case <-t.C:
			pctx, cancel := context.WithTimeout(ctx, checkEvery)
			err := conn.Ping(pctx)
			cancel()
			if err != nil && ctx.Err() == nil {
				log.Warn("no longer leading: the lock's connection failed; another replica may lead now", "err", err)
				return
			}
		}
	}
}

func closeQuietly(conn *pgx.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = conn.Close(ctx) // Closing releases the lock; a connection that is gone has released it.
}
