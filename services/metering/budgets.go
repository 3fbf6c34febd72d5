package metering

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/convergence-dev/convergence/internal/natsrpc"
	"github.com/convergence-dev/convergence/internal/taskspec"
	"github.com/convergence-dev/convergence/pkg/events"
	"github.com/convergence-dev/convergence/services/metering/pricing"
)

// Budgets: the API keeps the monthly limits and asks, before it accepts a run, for the run's
// worst-case cost to be reserved here against them. The ledger transaction that records the
// run's usage deletes its reservation (ledger.RecordTasks), so the exact cost replaces the
// worst case in one step. A reservation is made only when the organization's and the tenant's
// spend this month plus what is reserved plus the run's worst case stays within each limit, in
// a transaction that holds the organization's reservation turn; so however many API and
// metering replicas reserve at once, and whenever usage is recorded, spent + reserved never
// passes a limit.

// ledgerLineSlack covers the rounding of a run's ledger lines: each line (one per agent and the
// synthesis, at most four) is priced to the nearest micro-unit on its own, so their sum may be
// above the cost of the run's tokens taken together by up to half a micro-unit each.
const ledgerLineSlack = 4

// worstCase is the most that tokens tokens of a model at rate can cost as the ledger prices
// them: every token at the highest of the rate's prices; nothing for a free model.
func worstCase(rate pricing.Rate, tokens int64) pricing.Micros {
	top := max(rate.Input, rate.Output, rate.Cached)
	if top == 0 {
		return 0
	}
	return pricing.Rate{Input: top}.TokenCost(tokens, 0, 0) + ledgerLineSlack
}

// maxReservedTokens bounds a reservation's tokens: far above any run's.
const maxReservedTokens = 1_000_000_000

// reserve answers a BudgetReservation.
func (s *Service) reserve(ctx context.Context, r events.BudgetReservation) (events.BudgetReserved, error) {
	switch {
	case !taskspec.ValidID(r.TaskID):
		return events.BudgetReserved{}, natsrpc.Errorf(natsrpc.CodeInvalid, "taskId %q is not a task ID", r.TaskID)
	case r.OrgID <= 0 || r.EnvID <= 0:
		return events.BudgetReserved{}, natsrpc.Errorf(natsrpc.CodeInvalid, "orgId and envId are required")
	case r.Tokens <= 0 || r.Tokens > maxReservedTokens:
		return events.BudgetReserved{}, natsrpc.Errorf(natsrpc.CodeInvalid, "tokenBudget %d: a run reserved against a budget may have 1 to %d tokens", r.Tokens, maxReservedTokens)
	case r.OrgLimitMicros != nil && *r.OrgLimitMicros < 0, r.TenantLimitMicros != nil && *r.TenantLimitMicros < 0:
		return events.BudgetReserved{}, natsrpc.Errorf(natsrpc.CodeInvalid, "a limit must not be negative")
	}
	prices := *s.prices.Load()
	rate, ok := prices.Lookup(r.Provider, r.Model)
	if !ok {
		return events.BudgetReserved{}, natsrpc.Errorf(natsrpc.CodeInvalid, "model %s of provider %s has no price in the price table in force (%s)",
			r.Model, r.Provider, prices.Label())
	}
	amount := worstCase(rate, r.Tokens)
	answer := events.BudgetReserved{AmountMicros: int64(amount), Currency: prices.Currency()}
	if amount == 0 {
		return answer, nil // A free model runs whatever a budget has left.
	}
	err := pgx.BeginFunc(ctx, s.deps.Pool, func(tx pgx.Tx) error {
		// The turn is taken before the sums, whose statement then sees every reservation made
		// before it and every usage recorded before it.
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtextextended('budget reservation', $1))`, r.OrgID); err != nil {
			return fmt.Errorf("take the organization's reservation turn: %w", err)
		}
		var earlier int64
		err := tx.QueryRow(ctx, `SELECT amount_micros FROM budget_reservations WHERE task_id = $1`, r.TaskID).Scan(&earlier)
		if err == nil {
			answer.AmountMicros = earlier // asked again: the first answer
			return nil
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("read reservation: %w", err)
		}
		org, tenant, err := spend(ctx, tx, r.OrgID, r.EnvID, thisMonth())
		if err != nil {
			return err
		}
		if err := fits(amount, "organization", r.OrgID, r.OrgLimitMicros, org, prices.Currency(), r.Tokens); err != nil {
			return err
		}
		if err := fits(amount, "tenant", r.EnvID, r.TenantLimitMicros, tenant, prices.Currency(), r.Tokens); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `INSERT INTO budget_reservations (task_id, org_id, env_id, amount_micros) VALUES ($1, $2, $3, $4)`,
			r.TaskID, r.OrgID, r.EnvID, int64(amount))
		if err != nil {
			return fmt.Errorf("record reservation: %w", err)
		}
		return nil
	})
	var refused *natsrpc.Error
	if errors.As(err, &refused) && refused.Reason == events.ReasonBudgetExceeded {
		s.metrics.budgetReservations.WithLabelValues("refused").Inc()
	}
	if err != nil {
		return events.BudgetReserved{}, err
	}
	s.metrics.budgetReservations.WithLabelValues("reserved").Inc()
	return answer, nil
}

// fits refuses amount when spent and reserved plus it would pass limit (nil: none), saying what
// remains.
func fits(amount pricing.Micros, scope string, id int64, limit *int64, u spent, currency string, tokens int64) error {
	if limit == nil || u.spent+u.reserved+amount <= pricing.Micros(*limit) {
		return nil
	}
	remaining := max(0, pricing.Micros(*limit)-u.spent-u.reserved)
	return &natsrpc.Error{Code: natsrpc.CodeConflict, Reason: events.ReasonBudgetExceeded, Message: fmt.Sprintf(
		"%s %d's monthly budget of %s %s has %s left (spent %s, reserved for runs in flight %s); this run may cost up to %s %s (%d tokens at the model's highest price): "+
			"wait for runs in flight to finish, ask for fewer rounds or a smaller tokenBudget, or raise the budget",
		scope, id, pricing.Micros(*limit), currency, remaining, u.spent, u.reserved, amount, currency, tokens)}
}

// spent is what an organization or a tenant has spent this month, and has reserved.
type spent struct{ spent, reserved pricing.Micros }

// rowQuerier is a pool or a transaction.
type rowQuerier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// spend reads the organization's and the tenant's spend in month in one statement, so that
// both sums see the same recorded usage and reservations.
func spend(ctx context.Context, q rowQuerier, orgID, envID int64, month time.Time) (org, tenant spent, err error) {
	err = q.QueryRow(ctx, `
		SELECT
			(SELECT coalesce(sum(cost_micros), 0) FROM metering_rollup_monthly WHERE org_id = $1 AND month = $3)::bigint
				+ (SELECT coalesce(sum(cost_micros), 0) FROM metering_rollup_pending WHERE org_id = $1 AND day >= $3 AND day < $4)::bigint,
			(SELECT coalesce(sum(amount_micros), 0) FROM budget_reservations WHERE org_id = $1)::bigint,
			(SELECT coalesce(sum(cost_micros), 0) FROM metering_rollup_monthly WHERE env_id = $2 AND month = $3)::bigint
				+ (SELECT coalesce(sum(cost_micros), 0) FROM metering_rollup_pending WHERE env_id = $2 AND day >= $3 AND day < $4)::bigint,
			(SELECT coalesce(sum(amount_micros), 0) FROM budget_reservations WHERE env_id = $2)::bigint`,
		orgID, envID, month, month.AddDate(0, 1, 0)).Scan(&org.spent, &org.reserved, &tenant.spent, &tenant.reserved)
	if err != nil {
		return org, tenant, fmt.Errorf("read spend: %w", err)
	}
	return org, tenant, nil
}

// thisMonth is the first day of the current UTC month.
func thisMonth() time.Time {
	now := time.Now().UTC()
	return time.Date(now.Year(), now.Month(), 1, 0, 0, 0, 0, time.UTC)
}

// release answers a BudgetRelease.
func (s *Service) release(ctx context.Context, r events.BudgetRelease) (events.BudgetReleased, error) {
	if len(r.TaskIDs) > events.MaxPage {
		return events.BudgetReleased{}, natsrpc.Errorf(natsrpc.CodeInvalid, "at most %d task IDs at once", events.MaxPage)
	}
	tag, err := s.deps.Pool.Exec(ctx, `DELETE FROM budget_reservations WHERE task_id = ANY($1)`, r.TaskIDs)
	if err != nil {
		return events.BudgetReleased{}, fmt.Errorf("release reservations: %w", err)
	}
	s.metrics.budgetReservations.WithLabelValues("released").Add(float64(tag.RowsAffected()))
	return events.BudgetReleased{}, nil
}

// staleReservations answers a StaleReservationsQuery.
func (s *Service) staleReservations(ctx context.Context, q events.StaleReservationsQuery) (events.StaleReservations, error) {
	rows, err := s.deps.Pool.Query(ctx, `
		SELECT task_id FROM budget_reservations WHERE created_at < now() - make_interval(secs => $1) ORDER BY created_at LIMIT $2`,
		q.OlderThanSeconds, events.MaxPage)
	if err != nil {
		return events.StaleReservations{}, fmt.Errorf("read stale reservations: %w", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return events.StaleReservations{}, fmt.Errorf("read stale reservations: %w", err)
	}
	return events.StaleReservations{TaskIDs: ids}, nil
}

// budgetUsage answers a BudgetUsageQuery.
func (s *Service) budgetUsage(ctx context.Context, q events.BudgetUsageQuery) (events.BudgetUsage, error) {
	if q.OrgID <= 0 || q.EnvID < 0 {
		return events.BudgetUsage{}, natsrpc.Errorf(natsrpc.CodeInvalid, "orgId is required")
	}
	month := thisMonth()
	org, tenant, err := spend(ctx, s.deps.Pool, q.OrgID, q.EnvID, month)
	if err != nil {
		return events.BudgetUsage{}, err
	}
	u := org
	if q.EnvID != 0 {
		u = tenant
	}
	return events.BudgetUsage{Month: month.Format("2006-01"), Currency: s.prices.Load().Currency(),
		SpentMicros: int64(u.spent), ReservedMicros: int64(u.reserved)}, nil
}
