package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/labstack/echo/v4"

	"github.com/convergence-dev/convergence/internal/httpx"
	"github.com/convergence-dev/convergence/services/metering/ledger"
	"github.com/convergence-dev/convergence/services/metering/pricing"
)

// usageRoutes registers the usage endpoints of operators and tenants. Every answer is summed
// from the metering's rollups (package ledger), never from a scan of the ledger.
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
	admin.POST("/usage/reconcile", s.reconcile)
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
	return s.answerUsage(c, q, q.OrgID)
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
	if err := tenantOnlyDimensions(q.GroupBy); err != nil {
		return err
	}
	var orgID int64
	err = s.deps.Pool.QueryRow(c.Request().Context(), `SELECT org_id FROM environments WHERE id = $1`, envID).Scan(&orgID)
	if errors.Is(err, pgx.ErrNoRows) {
		return httpx.NotFound(fmt.Sprintf("tenant %d", envID))
	}
	if err != nil {
		return fmt.Errorf("find tenant: %w", err)
	}
	q.EnvID = envID
	return s.answerUsage(c, q, orgID)
}

// ownUsage answers a tenant about its own usage, and only its own: the tenant comes from the
// API key, never from the request.
func (s *Service) ownUsage(c echo.Context) error {
	q, err := usageQuery(c)
	if err != nil {
		return err
	}
	if err := tenantOnlyDimensions(q.GroupBy); err != nil {
		return err
	}
	t := tenantOf(c)
	q.EnvID = t.EnvID
	return s.answerUsage(c, q, t.OrgID)
}

// usageQuery reads from, to and groupBy, and refuses query parameters it does not know, so a
// misspelt one is not silently ignored.
func usageQuery(c echo.Context, extra ...string) (ledger.Query, error) {
	known := append([]string{"from", "to", "groupBy"}, extra...)
	for name := range c.QueryParams() {
		if !slices.Contains(known, name) {
			return ledger.Query{}, httpx.BadRequest("unknown query parameter %q; this endpoint takes %v", name, known)
		}
	}
	from, to, err := ledger.ParseRange(c.QueryParam("from"), c.QueryParam("to"), time.Now())
	if err != nil {
		return ledger.Query{}, httpx.BadRequest("%v", err)
	}
	groupBy, err := ledger.ParseDimensions(c.QueryParam("groupBy"))
	if err != nil {
		return ledger.Query{}, httpx.BadRequest("%v", err)
	}
	if slices.Contains(groupBy, ledger.ByDay) && to.Sub(from) > maxDaysByDay*24*time.Hour {
		return ledger.Query{}, httpx.BadRequest("groupBy day covers at most %d days; narrow from and to, or group by month", maxDaysByDay)
	}
	return ledger.Query{From: from, To: to, GroupBy: groupBy}, nil
}

// maxDaysByDay bounds a day-by-day answer.
const maxDaysByDay = 400

// tenantOnlyDimensions refuses groupings that make no sense within one tenant.
func tenantOnlyDimensions(dims []ledger.Dimension) error {
	for _, d := range dims {
		if d == ledger.ByOrganization || d == ledger.ByTenant {
			return httpx.BadRequest("groupBy %s does not apply to one tenant's usage; group by model, day or month", d)
		}
	}
	return nil
}

func positiveID(name, raw string) (int64, error) {
	id, err := strconv.ParseInt(raw, 10, 64)
	if err != nil || id <= 0 {
		return 0, httpx.BadRequest("%s %q is not a positive integer", name, raw)
	}
	return id, nil
}

// answerUsage answers q. A tenant's usage is selected by tenant alone; orgID, when not zero,
// is the organization the answer is about, shown with it.
func (s *Service) answerUsage(c echo.Context, q ledger.Query, orgID int64) error {
	sum, err := ledger.Summarize(c.Request().Context(), s.deps.Pool, q)
	if err != nil {
		return fmt.Errorf("summarize usage: %w", err)
	}
	groupBy := make([]string, len(q.GroupBy))
	for i, d := range q.GroupBy {
		groupBy[i] = string(d)
	}
	ans := usageAnswer{
		Success:  true,
		From:     q.From.Format(time.DateOnly),
		To:       q.To.Format(time.DateOnly),
		GroupBy:  groupBy,
		Currency: sum.Currency,
		Totals:   totalsJSON(sum.Totals),
		Groups:   make([]usageGroup, 0, len(sum.Groups)),
	}
	if orgID != 0 {
		ans.OrgID = &orgID
	}
	if q.EnvID != 0 {
		ans.EnvID = &q.EnvID
	}
	for _, g := range sum.Groups {
		ans.Groups = append(ans.Groups, groupJSON(q, g))
	}
	return c.JSON(http.StatusOK, ans)
}

// usageAnswer is the answer of every usage endpoint.
type usageAnswer struct {
	Success  bool         `json:"success"`
	From     string       `json:"from"`
	To       string       `json:"to"`
	OrgID    *int64       `json:"orgId,omitempty"`
	EnvID    *int64       `json:"envId,omitempty"`
	GroupBy  []string     `json:"groupBy"`
	Currency string       `json:"currency"`
	Totals   usageTotals  `json:"totals"`
	Groups   []usageGroup `json:"groups"`
}

// usageTotals is the usage object of a tenant, an organization, a group or the whole answer.
// Token counts are named as everywhere else in the API. cost is the estimate at list prices of
// the priced usage, in currency units with six decimals; unpricedTokens and unpricedCalls are
// the usage of models without a price, which the cost leaves out.
type usageTotals struct {
	Calls                   int64    `json:"calls"`
	Tasks                   int64    `json:"tasks"`
	FailedTasks             int64    `json:"failedTasks"`
	InputTokens             int64    `json:"inputTokens"`
	OutputTokens            int64    `json:"outputTokens"`
	CachedTokens            int64    `json:"cachedTokens"`
	TotalTokens             int64    `json:"totalTokens"`
	ContainerSeconds        float64  `json:"containerSeconds"`
	Cost                    string   `json:"cost"`
	CostMicros              int64    `json:"costMicros"`
	UnpricedCalls           int64    `json:"unpricedCalls"`
	UnpricedTokens          int64    `json:"unpricedTokens"`
	AverageConvergenceScore *float64 `json:"averageConvergenceScore"`
}

// usageGroup is one group's usage. Only the keys of the grouped dimensions are present; model
// groups of container time have an empty provider and model.
type usageGroup struct {
	OrgID    *int64      `json:"orgId,omitempty"`
	EnvID    *int64      `json:"envId,omitempty"`
	Provider *string     `json:"provider,omitempty"`
	Model    *string     `json:"model,omitempty"`
	Day      string      `json:"day,omitempty"`
	Month    string      `json:"month,omitempty"`
	Usage    usageTotals `json:"usage"`
}

func totalsJSON(t ledger.Totals) usageTotals {
	out := usageTotals{
		Calls: t.Calls, Tasks: t.Tasks, FailedTasks: t.FailedTasks,
		InputTokens: t.InputTokens, OutputTokens: t.OutputTokens, CachedTokens: t.CachedTokens, TotalTokens: t.TotalTokens,
		ContainerSeconds: t.ContainerSeconds(),
		Cost:             t.Cost.String(), CostMicros: int64(t.Cost),
		UnpricedCalls: t.UnpricedCalls, UnpricedTokens: t.UnpricedTokens,
	}
	if avg, ok := t.AverageScore(); ok {
		avg = math.Round(avg*100) / 100
		out.AverageConvergenceScore = &avg
	}
	return out
}

func groupJSON(q ledger.Query, g ledger.Group) usageGroup {
	out := usageGroup{Usage: totalsJSON(g.Totals)}
	if slices.Contains(q.GroupBy, ledger.ByOrganization) || slices.Contains(q.GroupBy, ledger.ByTenant) {
		out.OrgID = &g.OrgID
	}
	if slices.Contains(q.GroupBy, ledger.ByTenant) {
		out.EnvID = &g.EnvID
	}
	if slices.Contains(q.GroupBy, ledger.ByModel) {
		out.Provider, out.Model = &g.Provider, &g.Model
	}
	switch {
	case slices.Contains(q.GroupBy, ledger.ByDay):
		out.Day = g.Period.Format(time.DateOnly)
	case slices.Contains(q.GroupBy, ledger.ByMonth):
		out.Month = g.Period.Format("2006-01")
	}
	return out
}

// unpricedModels lists the models whose usage arrived without a price.
func (s *Service) unpricedModels(c echo.Context) error {
	ctx := c.Request().Context()
	prices, err := ledger.CurrentPrices(ctx, s.deps.Pool)
	if err != nil && !errors.Is(err, ledger.ErrNoPrices) {
		return err
	}
	models, err := ledger.ListUnpriced(ctx, s.deps.Pool, prices)
	if err != nil {
		return err
	}
	type model struct {
		Provider    string    `json:"provider"`
		Model       string    `json:"model"`
		FirstSeenAt time.Time `json:"firstSeenAt"`
		LastSeenAt  time.Time `json:"lastSeenAt"`
		Lines       int64     `json:"lines"`
		Calls       int64     `json:"calls"`
		TotalTokens int64     `json:"totalTokens"`
		PricedNow   bool      `json:"pricedNow"`
	}
	out := make([]model, len(models))
	for i, m := range models {
		out[i] = model{m.Provider, m.Model, m.FirstSeenAt.UTC(), m.LastSeenAt.UTC(), m.Lines, m.Calls, m.TotalTokens, m.PricedNow}
	}
	ans := map[string]any{"success": true, "models": out}
	if prices.Table != nil {
		ans["priceVersion"] = map[string]any{"id": prices.VersionID, "label": prices.Label(), "currency": prices.Currency()}
	}
	return c.JSON(http.StatusOK, ans)
}

// maxReconcileDays bounds one reconciliation.
const maxReconcileDays = 366

// reconcile compares the ledger with the converger's task records for a period (GET, from the
// query) and repairs the gaps (POST, from a JSON body).
func (s *Service) reconcile(c echo.Context) error {
	ctx := c.Request().Context()
	var in struct {
		From string `json:"from"`
		To   string `json:"to"`
	}
	repair := c.Request().Method == http.MethodPost
	if repair {
		dec := json.NewDecoder(c.Request().Body)
		dec.DisallowUnknownFields()
		if err := dec.Decode(&in); err != nil && !errors.Is(err, io.EOF) {
			return httpx.BadRequest(`body must be JSON {"from": "YYYY-MM-DD", "to": "YYYY-MM-DD"}: %v`, err)
		}
	} else {
		for name := range c.QueryParams() {
			if name != "from" && name != "to" {
				return httpx.BadRequest("unknown query parameter %q; this endpoint takes from and to", name)
			}
		}
		in.From, in.To = c.QueryParam("from"), c.QueryParam("to")
	}
	from, to, err := ledger.ParseRange(in.From, in.To, time.Now())
	if err != nil {
		return httpx.BadRequest("%v", err)
	}
	if to.Sub(from) >= maxReconcileDays*24*time.Hour {
		return httpx.BadRequest("reconcile at most %d days at a time", maxReconcileDays)
	}
	var prices ledger.Prices
	if repair {
		if prices, err = s.repairPrices(ctx); err != nil {
			return err
		}
	}
	rep, err := ledger.Reconcile(ctx, s.deps.Pool, prices, ledger.ReconcileOptions{From: from, To: to, Repair: repair})
	if err != nil {
		return fmt.Errorf("reconcile: %w", err)
	}
	if repair {
		s.logger.InfoContext(ctx, "usage reconciled and repaired", "from", in.From, "to", in.To,
			"missing", len(rep.Missing), "mismatched", len(rep.Mismatched), "repriced_lines", rep.Unpriced.RepricedLines,
			"request_id", httpx.RequestID(c))
	}
	return c.JSON(http.StatusOK, map[string]any{"success": true, "reconciliation": rep})
}

// repairPrices are the prices a repair charges at: the metering's current version, or the
// built-in table before the metering has registered any.
func (s *Service) repairPrices(ctx context.Context) (ledger.Prices, error) {
	p, err := ledger.CurrentPrices(ctx, s.deps.Pool)
	if errors.Is(err, ledger.ErrNoPrices) {
		return ledger.RegisterPrices(ctx, s.deps.Pool, pricing.Default())
	}
	return p, err
}
