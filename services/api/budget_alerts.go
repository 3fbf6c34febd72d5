package api

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/convergence-dev/convergence/internal/natsrpc"
	"github.com/convergence-dev/convergence/internal/outbox"
	"github.com/convergence-dev/convergence/internal/periodic"
	"github.com/convergence-dev/convergence/pkg/events"
)

// Budget alerts. Every alertEvery, each replica looks at the budgets that have alert thresholds
// (alertAt), asks the metering what each has spent this month, and tells of every threshold the
// spend has reached that was not told this month: a budget.threshold event (stream
// BILLING), written with its record in api.budget_alerts in one transaction, so each is
// told once however many replicas look. The converger delivers the alerts of tenants' budgets
// that name a webhook URL.

// alertEvery is how often the budgets are looked at.
const alertEvery = 30 * time.Second

// maxAlertBudgets bounds the budgets one look reads.
const maxAlertBudgets = 1000

// watchBudgetAlerts tells of crossed thresholds until ctx is done.
func (s *Service) watchBudgetAlerts(ctx context.Context) {
	periodic.Every(ctx, alertEvery, func() {
		if _, err := s.budgetAlertsOnce(ctx); err != nil && ctx.Err() == nil {
			s.logger.Warn("look at budget alerts", "err", err)
		}
	})
}

// alertingBudget is a budget with alert thresholds.
type alertingBudget struct {
	orgID, envID, limit int64
	alertAt             []int32 // thousandths of the limit
	webhookURL          string
}

// budgetAlertsOnce looks at the budgets once and says how many thresholds it told of.
func (s *Service) budgetAlertsOnce(ctx context.Context) (int, error) {
	rows, err := s.deps.Pool.Query(ctx, `
		SELECT org_id, env_id, monthly_limit_micros, alert_at, coalesce(webhook_url, '') FROM budgets
		WHERE alert_at <> '{}' ORDER BY org_id, env_id LIMIT $1`, maxAlertBudgets)
	if err != nil {
		return 0, fmt.Errorf("read budgets: %w", err)
	}
	budgets, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (alertingBudget, error) {
		var a alertingBudget
		err := r.Scan(&a.orgID, &a.envID, &a.limit, &a.alertAt, &a.webhookURL)
		return a, err
	})
	if err != nil {
		return 0, fmt.Errorf("read budgets: %w", err)
	}
	told := 0
	for _, b := range budgets {
		u, err := natsrpc.Call[events.BudgetUsageQuery, events.BudgetUsage](ctx, s.deps.NC, events.SubjectBudgetUsage,
			events.BudgetUsageQuery{OrgID: b.orgID, EnvID: b.envID})
		if err != nil {
			return told, fmt.Errorf("spend of budget %d/%d: %w", b.orgID, b.envID, err)
		}
		for _, t := range b.alertAt {
			// Reached: spent ≥ t/1000 of the limit (and something spent, for a limit of 0).
			if u.SpentMicros == 0 || u.SpentMicros*1000 < int64(t)*b.limit {
				continue
			}
			ok, err := s.tellThreshold(ctx, b, t, u)
			if err != nil {
				return told, err
			}
			if ok {
				told++
				level := "approaching"
				if t >= 1000 {
					level = "limit"
				}
				s.thresholds.WithLabelValues(level).Inc()
				s.logger.Info("budget threshold reached", "orgId", b.orgID, "envId", b.envID, "threshold", float64(t)/1000,
					"spent", u.SpentMicros, "limit", b.limit, "month", u.Month)
			}
		}
	}
	return told, nil
}

// tellThreshold records threshold t of budget b as told for u's month and writes its event, in
// one transaction, unless it was told already; it reports whether it told it now.
func (s *Service) tellThreshold(ctx context.Context, b alertingBudget, t int32, u events.BudgetUsage) (bool, error) {
	month, err := time.Parse("2006-01", u.Month)
	if err != nil {
		return false, fmt.Errorf("the metering's month %q: %w", u.Month, err)
	}
	told := false
	err = s.deps.Outbox.Tx(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `
			INSERT INTO budget_alerts (org_id, env_id, month, threshold, spent_micros, limit_micros) VALUES ($1, $2, $3, $4, $5, $6)
			ON CONFLICT DO NOTHING`, b.orgID, b.envID, month, t, u.SpentMicros, b.limit)
		if err != nil || tag.RowsAffected() == 0 {
			return err
		}
		told = true
		ev := events.BudgetThreshold{OrgID: b.orgID, EnvID: b.envID, Month: u.Month, Threshold: float64(t) / 1000,
			LimitMicros: b.limit, SpentMicros: u.SpentMicros, Currency: u.Currency, At: time.Now().UTC(), WebhookURL: b.webhookURL}
		env, err := events.NewEnvelope(eventSource, events.TypeBudgetThreshold,
			strconv.FormatInt(b.orgID, 10)+"/"+strconv.FormatInt(b.envID, 10), "", ev)
		if err != nil {
			return err
		}
		return outbox.Write(ctx, tx, events.BudgetThresholdSubject(b.orgID, b.envID), env)
	})
	if err != nil {
		return false, fmt.Errorf("tell budget threshold: %w", err)
	}
	return told, nil
}
