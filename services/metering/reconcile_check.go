package metering

import (
	"context"
	"fmt"
	"time"

	"github.com/convergence-dev/convergence/internal/periodic"
	"github.com/convergence-dev/convergence/services/metering/ledger"
)

// Kinds of gap a reconciliation finds.
const (
	gapMissing    = "missing"
	gapMismatched = "mismatched"
	gapOrphaned   = "orphaned"
)

// reconcileSettle is how long after a task finished its result may still be on its way to the
// ledger: the check does not count it missing before.
const reconcileSettle = 5 * time.Minute

// checkReconciliation compares the ledger with the converger's records of the tasks that
// finished yesterday and today (UTC), every ReconcileCheck, without repairing anything, and
// reports what disagrees in convergence_metering_reconcile_gaps{kind} with the time of the
// check, for the UsageUnreconciled alert. Replicas take turns under an advisory lock: one
// checks, the others skip that tick, and the alert reads only recent checks' figures.
func (s *Service) checkReconciliation(ctx context.Context) {
	if s.cfg.ReconcileCheck <= 0 {
		return
	}
	periodic.Every(ctx, s.cfg.ReconcileCheck, func() {
		ran, gaps, err := s.reconcileOnce(ctx, time.Now())
		switch {
		case err != nil && ctx.Err() == nil:
			s.metrics.reconcileErrors.Inc()
			s.logger.Warn("reconciliation check failed; it runs again at the next tick", "err", err)
		case ran:
			for kind, n := range gaps {
				s.metrics.reconcileGaps.WithLabelValues(kind).Set(float64(n))
			}
			s.metrics.reconcileChecked.SetToCurrentTime()
			if gaps[gapMissing]+gaps[gapMismatched]+gaps[gapOrphaned] > 0 {
				s.logger.Warn("the ledger and the converger's records disagree; convergence reconcile -from yesterday shows the tasks, -repair records them",
					gapMissing, gaps[gapMissing], gapMismatched, gaps[gapMismatched], gapOrphaned, gaps[gapOrphaned])
			}
		}
	})
}

// reconcileOnce runs one check as of now, unless another replica is running one. It returns
// whether it ran and the gaps by kind.
func (s *Service) reconcileOnce(ctx context.Context, now time.Time) (ran bool, gaps map[string]int, err error) {
	conn, err := s.deps.Pool.Acquire(ctx)
	if err != nil {
		return false, nil, err
	}
	defer conn.Release()
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock(hashtext('metering_reconcile_check'))`).Scan(&ran); err != nil || !ran {
		return false, nil, err
	}
	defer func() {
		// A lock left behind goes with the connection; a healthy one unlocks for the next turn.
		if _, uerr := conn.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock(hashtext('metering_reconcile_check'))`); uerr != nil {
			_ = conn.Conn().Close(context.WithoutCancel(ctx)) // Closing drops the lock; nothing else to do.
		}
	}()

	today := now.UTC().Truncate(24 * time.Hour)
	rep, err := ledger.Reconcile(ctx, s.deps.Pool, convergerRecords{s.deps.NC}, ledger.Prices{},
		ledger.ReconcileOptions{From: today.AddDate(0, 0, -1), To: today})
	if err != nil {
		return true, nil, fmt.Errorf("reconcile: %w", err)
	}
	gaps = map[string]int{gapMissing: 0, gapMismatched: len(rep.Mismatched), gapOrphaned: len(rep.Orphaned)}
	for _, g := range rep.Missing {
		if now.Sub(g.FinishedAt) >= reconcileSettle {
			gaps[gapMissing]++
		}
	}
	return true, gaps, nil
}
