package api

import (
	"cmp"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"

	"github.com/labstack/echo/v4"

	"github.com/convergence-dev/convergence/internal/httpx"
	"github.com/convergence-dev/convergence/internal/natsrpc"
	contract "github.com/convergence-dev/convergence/pkg/api"
	"github.com/convergence-dev/convergence/pkg/events"
)

// usageRoutes registers the usage endpoints of operators and tenants. The metering owns usage:
// every answer is its answer on the bus (events.SubjectUsage*), summed from its rollups.
//
//	GET  /api/v1/usage                      admin: all usage; ?from=&to=&groupBy=&orgId=
//	GET  /api/v1/tenant/:envId/usage        admin: one tenant's usage; ?from=&to=&groupBy=
//	GET  /api/v1/usage/me                   tenant: its own usage; ?from=&to=&groupBy=
//	GET  /api/v1/usage/unpriced             admin: models with usage that has no price
//	GET  /api/v1/usage/reconcile            admin: compare the ledger with the task records; ?from=&to=
//	POST /api/v1/usage/reconcile            admin: the same, repairing the gaps; body {"from","to"}
//
// from and to are UTC days (YYYY-MM-DD), both included; by default the current month to date.
// groupBy is a comma list of organization, tenant, model, and day or month.
func (s *Service) usageRoutes(admin, tenant *echo.Group) {
	admin.GET("/usage", s.usage)
	admin.GET("/tenant/:envId/usage", s.tenantUsage)
	tenant.GET("/usage/me", s.ownUsage)
	admin.GET("/usage/unpriced", s.unpricedModels)
	admin.GET("/usage/reconcile", s.reconcile)
	admin.POST("/usage/reconcile", s.reconcile, s.audited(auditUsageRepair))
}

// usage answers an operator's question about all usage, or one organization's.
func (s *Service) usage(c echo.Context) error {
	q, err := usageQuery(c, "orgId")
	if err != nil {
		return err
	}
	if raw := c.QueryParam("orgId"); raw != "" {
		if q.OrgID, err = positiveID("orgId", raw); err != nil {
			return err
		}
		var exists bool
		err := s.deps.Pool.QueryRow(c.Request().Context(), `SELECT EXISTS (SELECT 1 FROM organizations WHERE id = $1)`, q.OrgID).Scan(&exists)
		if err != nil {
			return fmt.Errorf("find organization: %w", err)
		}
		if !exists {
			return httpx.NotFound(fmt.Sprintf("organization %d", q.OrgID))
		}
	}
	return s.answerUsage(c, q)
}

// tenantUsage answers an operator's question about one tenant, destroyed or not.
func (s *Service) tenantUsage(c echo.Context) error {
	envID, err := positiveID("envId", c.Param("envId"))
	if err != nil {
		return err
	}
	q, err := usageQuery(c)
	if err != nil {
		return err
	}
	if q.OrgID, err = s.tenantOrg(c.Request().Context(), envID); err != nil {
		return err
	}
	q.EnvID = envID
	return s.answerUsage(c, q)
}

// ownUsage answers a tenant about its own usage, and only its own: the tenant comes from the
// API key, never from the request.
func (s *Service) ownUsage(c echo.Context) error {
	q, err := usageQuery(c)
	if err != nil {
		return err
	}
	t := tenantOf(c)
	q.EnvID, q.OrgID = t.EnvID, t.OrgID
	return s.answerUsage(c, q)
}

// usageQuery reads from, to and groupBy, and refuses query parameters it does not know, so a
// misspelt one is not silently ignored. The metering checks the values.
func usageQuery(c echo.Context, extra ...string) (events.UsageQuery, error) {
	known := append([]string{"from", "to", "groupBy"}, extra...)
	for name := range c.QueryParams() {
		if !slices.Contains(known, name) {
			return events.UsageQuery{}, httpx.BadRequest("unknown query parameter %q; this endpoint takes %v", name, known)
		}
	}
	return events.UsageQuery{From: c.QueryParam("from"), To: c.QueryParam("to"), GroupBy: c.QueryParam("groupBy")}, nil
}

func positiveID(name, raw string) (int64, error) {
	id, err := strconv.ParseInt(raw, 10, 64)
	if err != nil || id <= 0 {
		return 0, httpx.BadRequest("%s %q is not a positive integer", name, raw)
	}
	return id, nil
}

// answerUsage asks the metering for q and answers its summary.
func (s *Service) answerUsage(c echo.Context, q events.UsageQuery) error {
	sum, err := natsrpc.Call[events.UsageQuery, events.UsageSummary](c.Request().Context(), s.deps.NC, events.SubjectUsageSummary, q)
	if err != nil {
		return fromMetering(err)
	}
	return c.JSON(http.StatusOK, usageView(sum))
}

// usageView is the metering's usage summary as the API shows it.
func usageView(sum events.UsageSummary) contract.UsageSummary {
	v := contract.UsageSummary{
		Success: true, From: sum.From, To: sum.To, GroupBy: sum.GroupBy, Currency: sum.Currency,
		Totals: usageTotals(sum.Totals), Groups: make([]contract.UsageGroup, len(sum.Groups)),
	}
	if sum.OrgID != nil {
		v.OrgID = *sum.OrgID
	}
	if sum.EnvID != nil {
		v.EnvID = *sum.EnvID
	}
	for i, g := range sum.Groups {
		v.Groups[i] = contract.UsageGroup{Provider: g.Provider, Model: g.Model, Day: g.Day, Month: g.Month, Usage: usageTotals(g.Usage)}
		if g.OrgID != nil {
			v.Groups[i].OrgID = *g.OrgID
		}
		if g.EnvID != nil {
			v.Groups[i].EnvID = *g.EnvID
		}
	}
	return v
}

func usageTotals(t events.UsageTotals) contract.UsageTotals {
	return contract.UsageTotals{
		Calls: t.Calls, Tasks: t.Tasks, FailedTasks: t.FailedTasks, InputTokens: t.InputTokens, OutputTokens: t.OutputTokens,
		CachedTokens: t.CachedTokens, TotalTokens: t.TotalTokens, ContainerSeconds: t.ContainerSeconds, Cost: t.Cost,
		CostMicros: t.CostMicros, UnpricedCalls: t.UnpricedCalls, UnpricedTokens: t.UnpricedTokens,
		AverageConvergenceScore: t.AverageConvergenceScore,
	}
}

// unpricedModels lists the models whose usage arrived without a price.
func (s *Service) unpricedModels(c echo.Context) error {
	ans, err := natsrpc.Call[events.UnpricedQuery, events.UnpricedModels](c.Request().Context(), s.deps.NC, events.SubjectUsageUnpriced, events.UnpricedQuery{})
	if err != nil {
		return fromMetering(err)
	}
	return c.JSON(http.StatusOK, struct {
		Success bool `json:"success"`
		events.UnpricedModels
	}{true, ans})
}

// reconcile compares the ledger with the converger's task records for a period (GET, from the
// query) and repairs the gaps (POST, from a JSON body).
func (s *Service) reconcile(c echo.Context) error {
	var in events.ReconcileRequest
	if c.Request().Method == http.MethodPost {
		var body struct {
			From string `json:"from"`
			To   string `json:"to"`
		}
		if err := httpx.DecodeJSON(c, &body, ""); err != nil {
			return err
		}
		in = events.ReconcileRequest{From: body.From, To: body.To, Repair: true}
	} else {
		for name := range c.QueryParams() {
			if name != "from" && name != "to" {
				return httpx.BadRequest("unknown query parameter %q; this endpoint takes from and to", name)
			}
		}
		in.From, in.To = c.QueryParam("from"), c.QueryParam("to")
	}
	ans, err := natsrpc.Call[events.ReconcileRequest, events.Reconciliation](c.Request().Context(), s.deps.NC, events.SubjectUsageReconcile, in)
	if err != nil {
		return fromMetering(err)
	}
	if in.Repair {
		// The metering accepted the days, so they are fit for the audit log.
		noteAudit(c, auditFacts{Target: fmt.Sprintf("the usage ledger from %s to %s", cmp.Or(in.From, "the month's start"), cmp.Or(in.To, "today"))})
		s.logger.InfoContext(c.Request().Context(), "usage reconciliation with repair asked", "from", in.From, "to", in.To, "request_id", httpx.RequestID(c))
	}
	return c.JSON(http.StatusOK, map[string]any{"success": true, "reconciliation": ans.Report})
}

// fromMetering is the HTTP answer to a failed question to the metering.
func fromMetering(err error) error {
	return fromService(err, "the metering, which answers usage questions,")
}

// fromService maps a failed request to another service (named by what, for the message) to
// the HTTP answer: its own words where they are meant for the caller, 503 when it did not
// answer, and the error itself (a 500 with a request ID) otherwise.
func fromService(err error, what string) error {
	var e *natsrpc.Error
	if !errors.As(err, &e) {
		return err
	}
	switch e.Code {
	case natsrpc.CodeInvalid:
		return httpx.BadRequest("%s", e.Message)
	case natsrpc.CodeNotFound:
		return httpx.NotFound(e.Message)
	case natsrpc.CodeConflict:
		return httpx.Conflict("%s", e.Message)
	case natsrpc.CodeUnavailable:
		return httpx.Unavailable(what)
	}
	return err
}
