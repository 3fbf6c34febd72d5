package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/labstack/echo/v4"

	"github.com/convergence-dev/convergence/internal/httpx"
	"github.com/convergence-dev/convergence/internal/natsrpc"
	"github.com/convergence-dev/convergence/internal/periodic"
	"github.com/convergence-dev/convergence/internal/taskspec"
	contract "github.com/convergence-dev/convergence/pkg/api"
	"github.com/convergence-dev/convergence/pkg/events"
	"github.com/convergence-dev/convergence/pkg/money"
)

// Budgets are monthly spend limits, of an organization (its own, else its plan's
// monthlySpendLimit) and of one tenant. The API keeps the limits (api.budgets); the metering
// keeps what is spent and reserved. Before a run is accepted, its worst case is reserved
// against both limits (see metering/budgets.go); a run that does not fit is refused with 402.

// budgetRoutes registers the operators' budget endpoints:
//
//	PUT /api/v1/orgs/:orgId/budget     {"monthlySpendLimit": "5.00" | null, "alertAt"?: [0.5, 0.8, 1]}
//	                                   (a tenant's may add "webhookUrl" for its alerts)
//	GET /api/v1/orgs/:orgId/budget
//	PUT /api/v1/tenant/:envId/budget   the same for one tenant
//	GET /api/v1/tenant/:envId/budget
func (s *Service) budgetRoutes(admin *echo.Group) {
	admin.PUT("/orgs/:orgId/budget", s.setBudget(orgScope), s.audited(auditBudgetSet))
	admin.GET("/orgs/:orgId/budget", s.getBudget(orgScope))
	admin.PUT("/tenant/:envId/budget", s.setBudget(tenantScope), s.audited(auditBudgetSet))
	admin.GET("/tenant/:envId/budget", s.getBudget(tenantScope))
}

// budgetScope is what a budget endpoint is about: an organization or a tenant.
type budgetScope string

const (
	orgScope    budgetScope = "organization"
	tenantScope budgetScope = "tenant"
)

// maxMonthlyLimit bounds a limit: a hundred million currency units a month.
const maxMonthlyLimit = money.Micros(100_000_000 * 1_000_000)

// maxAlerts bounds the thresholds of a budget.
const maxAlerts = 10

// budgetTarget reads the organization or tenant of the path: its organization, its tenant (0
// for an organization's budget) and the organization's plan.
func (s *Service) budgetTarget(c echo.Context, scope budgetScope) (orgID, envID int64, plan string, err error) {
	ctx := c.Request().Context()
	if scope == orgScope {
		if orgID, err = orgIDParam(c); err != nil {
			return 0, 0, "", err
		}
		_, limits, err := s.orgOf(ctx, orgID)
		return orgID, 0, limits.Plan, err
	}
	if envID, err = envIDParam(c); err != nil {
		return 0, 0, "", err
	}
	err = s.deps.Pool.QueryRow(ctx, `
		SELECT k.org_id, o.plan FROM tenant_keys k JOIN organizations o ON o.id = k.org_id WHERE k.env_id = $1 LIMIT 1`, envID).
		Scan(&orgID, &plan)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, 0, "", httpx.NotFound(fmt.Sprintf("tenant %d", envID))
	}
	return orgID, envID, plan, err
}

// setBudget sets or removes a budget and answers it as it now stands.
func (s *Service) setBudget(scope budgetScope) echo.HandlerFunc {
	return func(c echo.Context) error {
		var req contract.BudgetRequest
		if err := decodeBody(c, &req); err != nil {
			return err
		}
		limit, alerts, err := checkBudget(req)
		if err != nil {
			return err
		}
		if req.WebhookURL != "" {
			if scope == orgScope {
				return httpx.BadRequest("webhookUrl: an organization's alerts go to the BILLING stream only; give a webhookUrl to a tenant's budget")
			}
			if err := taskspec.ValidateWebhookURL(req.WebhookURL); err != nil {
				return httpx.BadRequest("webhookUrl: %v", err)
			}
		}
		orgID, envID, _, err := s.budgetTarget(c, scope)
		if err != nil {
			return err
		}
		noteAudit(c, auditFacts{OrgID: orgID, EnvID: envID, Target: budgetName(scope, orgID, envID)})
		ctx := c.Request().Context()
		if limit == nil {
			_, err = s.deps.Pool.Exec(ctx, `DELETE FROM budgets WHERE org_id = $1 AND env_id = $2`, orgID, envID)
		} else {
			_, err = s.deps.Pool.Exec(ctx, `
				INSERT INTO budgets (org_id, env_id, monthly_limit_micros, alert_at, webhook_url) VALUES ($1, $2, $3, $4, NULLIF($5, ''))
				ON CONFLICT (org_id, env_id) DO UPDATE SET monthly_limit_micros = EXCLUDED.monthly_limit_micros,
					alert_at = EXCLUDED.alert_at, webhook_url = EXCLUDED.webhook_url, updated_at = now()`,
				orgID, envID, int64(*limit), alerts, req.WebhookURL)
		}
		if err != nil {
			return fmt.Errorf("set budget: %w", err)
		}
		s.logger.Info("budget set", "orgId", orgID, "envId", envID, "limit", limit, "request_id", httpx.RequestID(c))
		return s.answerBudget(c, scope)
	}
}

func budgetName(scope budgetScope, orgID, envID int64) string {
	if scope == orgScope {
		return fmt.Sprintf("budget of organization %d", orgID)
	}
	return fmt.Sprintf("budget of tenant %d of organization %d", envID, orgID)
}

// checkBudget says what is wrong with the body of PUT .../budget, or returns its limit (nil:
// remove the budget) and its thresholds in thousandths of the limit. A monthlySpendLimit of null
// removes the budget: an organization's plan's limit then applies, a tenant has none of its
// own. A tenant's budget may name a webhookUrl its alerts are delivered to.
func checkBudget(r contract.BudgetRequest) (*money.Micros, []int32, error) {
	if r.MonthlySpendLimit == nil { // Absent; a JSON null is the text null.
		return nil, nil, httpx.BadRequest(`monthlySpendLimit is required: a decimal amount in currency units such as "5.00", or null to remove the budget`)
	}
	var alerts []int32
	for _, a := range r.AlertAt {
		permille := math.Round(a * 1000)
		if math.IsNaN(a) || permille < 1 || permille > 1000 {
			return nil, nil, httpx.BadRequest("alertAt: %v is not a fraction of the limit above 0 and at most 1, such as 0.8", a)
		}
		alerts = append(alerts, int32(permille))
	}
	slices.Sort(alerts)
	alerts = slices.Compact(alerts)
	if len(alerts) > maxAlerts {
		return nil, nil, httpx.BadRequest("alertAt: give at most %d thresholds", maxAlerts)
	}
	if string(r.MonthlySpendLimit) == "null" {
		return nil, nil, nil
	}
	var limit money.Micros
	if err := json.Unmarshal(r.MonthlySpendLimit, &limit); err != nil {
		return nil, nil, httpx.BadRequest(`monthlySpendLimit: %v; give a decimal amount in currency units such as "5.00"`, err)
	}
	if limit > maxMonthlyLimit {
		return nil, nil, httpx.BadRequest("monthlySpendLimit: %s is implausibly large; at most %s", limit, maxMonthlyLimit)
	}
	if alerts == nil {
		alerts = []int32{}
	}
	return &limit, alerts, nil
}

// getBudget answers a budget as it stands.
func (s *Service) getBudget(scope budgetScope) echo.HandlerFunc {
	return func(c echo.Context) error { return s.answerBudget(c, scope) }
}

func (s *Service) answerBudget(c echo.Context, scope budgetScope) error {
	orgID, envID, plan, err := s.budgetTarget(c, scope)
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	v := contract.Budget{OrgID: orgID, EnvID: envID, Source: contract.BudgetSourceNone, AlertAt: []float64{}}
	var monthly *money.Micros
	var limit int64
	var alerts []int32
	var hook *string
	err = s.deps.Pool.QueryRow(ctx, `SELECT monthly_limit_micros, alert_at, webhook_url FROM budgets WHERE org_id = $1 AND env_id = $2`, orgID, envID).
		Scan(&limit, &alerts, &hook)
	switch {
	case err == nil:
		l := money.Micros(limit)
		monthly, v.Source = &l, contract.BudgetSource(scope)
		if hook != nil {
			v.WebhookURL = *hook
		}
		for _, a := range alerts {
			v.AlertAt = append(v.AlertAt, float64(a)/1000)
		}
	case !errors.Is(err, pgx.ErrNoRows):
		return fmt.Errorf("read budget: %w", err)
	case scope == orgScope:
		if l := s.plans.limits(plan).MonthlySpendLimit; l != nil {
			monthly, v.Source = l, contract.BudgetSourcePlan
		}
	}
	u, err := natsrpc.Call[events.BudgetUsageQuery, events.BudgetUsage](ctx, s.deps.NC, events.SubjectBudgetUsage,
		events.BudgetUsageQuery{OrgID: orgID, EnvID: envID})
	if err != nil {
		return fromService(err, "the metering, which keeps what is spent,")
	}
	spent, reserved := money.Micros(u.SpentMicros), money.Micros(u.ReservedMicros)
	v.Month, v.Currency, v.Spent, v.Reserved = u.Month, u.Currency, spent.String(), reserved.String()
	if monthly != nil {
		limit, remaining := monthly.String(), max(0, *monthly-spent-reserved).String()
		v.MonthlySpendLimit, v.Remaining = &limit, &remaining
	}
	return c.JSON(http.StatusOK, contract.BudgetAnswer{Success: true, Budget: v})
}

// runLimits are the monthly limits a tenant's run is reserved against; nil where there is none.
type runLimits struct {
	org, tenant *int64
}

// limitsOf reads tenant t's budgets: its organization's own (else its plan's) and its own.
func (s *Service) limitsOf(ctx context.Context, t Tenant) (runLimits, error) {
	var l runLimits
	rows, err := s.deps.Pool.Query(ctx, `SELECT env_id, monthly_limit_micros FROM budgets WHERE org_id = $1 AND env_id IN (0, $2)`, t.OrgID, t.EnvID)
	if err != nil {
		return l, fmt.Errorf("read budgets: %w", err)
	}
	var envID, limit int64
	_, err = pgx.ForEachRow(rows, []any{&envID, &limit}, func() error {
		v := limit
		if envID == 0 {
			l.org = &v
		} else {
			l.tenant = &v
		}
		return nil
	})
	if err != nil {
		return l, fmt.Errorf("read budgets: %w", err)
	}
	if l.org == nil {
		if p := s.plans.limits(t.Plan).MonthlySpendLimit; p != nil {
			v := int64(*p)
			l.org = &v
		}
	}
	return l, nil
}

// reserve reserves the worst case of run req of tenant t against its budgets, when it has any,
// and bounds the run's tokens to what was reserved. It returns the release of the reservation,
// for a run that is not accepted after all.
//
// The worst case is the run's tokens at its model's highest price: its tokenBudget when it
// sets one, else (maxRounds × 2 agents + 1 synthesis) × the turn's token cap
// (api.budget.turn-tokens). The engine stops a run before a call that could pass its token
// budget, so the run's recorded cost stays within what was reserved.
func (h *convergeAPI) reserve(ctx context.Context, t Tenant, req *events.ConvergeRequest) (release func(), err error) {
	limits, err := h.s.limitsOf(ctx, t)
	if err != nil || (limits.org == nil && limits.tenant == nil) {
		return func() {}, err
	}
	model, err := h.prices.lookup(ctx, req.Model)
	if err != nil {
		return nil, err
	}
	if req.TokenBudget <= 0 {
		req.TokenBudget = int64(2*req.MaxRounds+1) * h.cfg.BudgetTurnTokens
	}
	_, err = natsrpc.Call[events.BudgetReservation, events.BudgetReserved](ctx, h.s.deps.NC, events.SubjectBudgetReserve, events.BudgetReservation{
		TaskID: req.TaskID, OrgID: t.OrgID, EnvID: t.EnvID, Provider: model.resolved.Provider, Model: model.resolved.Model,
		Tokens: req.TokenBudget, OrgLimitMicros: limits.org, TenantLimitMicros: limits.tenant,
	})
	var e *natsrpc.Error
	if errors.As(err, &e) && e.Reason == events.ReasonBudgetExceeded {
		return nil, &httpx.Error{Status: http.StatusPaymentRequired, Code: "budget_exceeded", Message: e.Message}
	}
	if err != nil {
		return nil, fromService(err, "the metering, which keeps the budgets,") // closed: nothing runs unreserved
	}
	return func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if _, err := natsrpc.Call[events.BudgetRelease, events.BudgetReleased](ctx, h.s.deps.NC, events.SubjectBudgetRelease,
			events.BudgetRelease{TaskIDs: []string{req.TaskID}}); err != nil {
			// The sweep gives it back later.
			h.s.logger.Warn("release a budget reservation", "task_id", req.TaskID, "err", err)
		}
	}, nil
}

// The sweep of reservations left behind: a run reserved and then never recorded (its API
// replica stopped in between, or its release was lost), or whose usage never settled it.
const (
	sweepEvery = time.Minute
	// staleAfter is the age of a reservation the sweep looks at: far longer than a request
	// takes from its reservation to its record.
	staleAfter = 2 * time.Minute
	// settleGrace is how long after its task ended a reservation may wait for the task's usage.
	settleGrace = 10 * time.Minute
)

// sweepReservations gives back, every sweepEvery until ctx is done, the stale reservations of
// tasks the API never recorded or that ended more than settleGrace ago. Every replica sweeps;
// a release is idempotent.
func (s *Service) sweepReservations(ctx context.Context) {
	periodic.Every(ctx, sweepEvery, func() {
		if n, err := s.sweepOnce(ctx); err != nil && ctx.Err() == nil {
			s.logger.Warn("sweep budget reservations", "err", err)
		} else if n > 0 {
			s.logger.Info("gave back budget reservations of runs never recorded or long ended", "reservations", n)
		}
	})
}

// sweepOnce gives back one page of stale reservations and says how many.
func (s *Service) sweepOnce(ctx context.Context) (int, error) {
	stale, err := natsrpc.Call[events.StaleReservationsQuery, events.StaleReservations](ctx, s.deps.NC, events.SubjectBudgetStale,
		events.StaleReservationsQuery{OlderThanSeconds: int64(staleAfter / time.Second)})
	if err != nil || len(stale.TaskIDs) == 0 {
		return 0, err
	}
	rows, err := s.deps.Pool.Query(ctx, `
		SELECT id FROM tasks WHERE id = ANY($1) AND (finished_at IS NULL OR finished_at > now() - make_interval(secs => $2))`,
		stale.TaskIDs, settleGrace.Seconds())
	if err != nil {
		return 0, fmt.Errorf("read tasks: %w", err)
	}
	live, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return 0, fmt.Errorf("read tasks: %w", err)
	}
	release := slices.DeleteFunc(stale.TaskIDs, func(id string) bool { return slices.Contains(live, id) })
	if len(release) == 0 {
		return 0, nil
	}
	_, err = natsrpc.Call[events.BudgetRelease, events.BudgetReleased](ctx, s.deps.NC, events.SubjectBudgetRelease, events.BudgetRelease{TaskIDs: release})
	return len(release), err
}
