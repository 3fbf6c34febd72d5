package metering

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/convergence-dev/convergence/internal/natsrpc"
	"github.com/convergence-dev/convergence/pkg/events"
	"github.com/convergence-dev/convergence/services/metering/ledger"
)

// Bounds of the usage questions.
const (
	// maxDaysByDay bounds a day-by-day summary.
	maxDaysByDay = 400
	// maxReconcileDays bounds one reconciliation.
	maxReconcileDays = 366
	// queryTimeout bounds a summary or a list of unpriced models; reconcileTimeout one
	// reconciliation, which reads a period of the ledger.
	queryTimeout     = 30 * time.Second
	reconcileTimeout = 5 * time.Minute
)

// queryServer answers the usage questions other services ask on the bus (the API's usage
// endpoints) until ctx is done. Every answer is summed from the rollups, never from a scan of
// the ledger, except a reconciliation's.
func (s *Service) queryServer() *natsrpc.Server {
	srv := natsrpc.NewServer(s.deps.NC, "metering", s.logger)
	natsrpc.Handle(srv, events.SubjectUsageSummary, queryTimeout, s.summary)
	natsrpc.Handle(srv, events.SubjectUsageUnpriced, queryTimeout, s.unpriced)
	natsrpc.Handle(srv, events.SubjectUsageReconcile, reconcileTimeout, s.reconcileQuery)
	natsrpc.Handle(srv, events.SubjectPriceLookup, queryTimeout, s.price)
	natsrpc.Handle(srv, events.SubjectBudgetReserve, queryTimeout, s.reserve)
	natsrpc.Handle(srv, events.SubjectBudgetRelease, queryTimeout, s.release)
	natsrpc.Handle(srv, events.SubjectBudgetUsage, queryTimeout, s.budgetUsage)
	natsrpc.Handle(srv, events.SubjectBudgetStale, queryTimeout, s.staleReservations)
	natsrpc.Handle(srv, events.SubjectInvoiceCreate, queryTimeout, s.createInvoice)
	natsrpc.Handle(srv, events.SubjectInvoiceFinalize, queryTimeout, s.finalizeInvoice)
	natsrpc.Handle(srv, events.SubjectInvoiceGet, queryTimeout, s.invoice)
	natsrpc.Handle(srv, events.SubjectInvoiceList, queryTimeout, s.listInvoices)
	return srv
}

// Ready reports whether the metering answers on the bus; the process's /readyz includes it.
func (s *Service) Ready(context.Context) error { return s.queries.Serving() }

// summary answers a UsageQuery.
func (s *Service) summary(ctx context.Context, in events.UsageQuery) (events.UsageSummary, error) {
	from, to, err := ledger.ParseRange(in.From, in.To, time.Now())
	if err != nil {
		return events.UsageSummary{}, natsrpc.Errorf(natsrpc.CodeInvalid, "%v", err)
	}
	groupBy, err := ledger.ParseDimensions(in.GroupBy)
	if err != nil {
		return events.UsageSummary{}, natsrpc.Errorf(natsrpc.CodeInvalid, "%v", err)
	}
	if slices.Contains(groupBy, ledger.ByDay) && to.Sub(from) > maxDaysByDay*24*time.Hour {
		return events.UsageSummary{}, natsrpc.Errorf(natsrpc.CodeInvalid, "groupBy day covers at most %d days; narrow from and to, or group by month", maxDaysByDay)
	}
	if in.EnvID != 0 {
		for _, d := range groupBy {
			if d == ledger.ByOrganization || d == ledger.ByTenant {
				return events.UsageSummary{}, natsrpc.Errorf(natsrpc.CodeInvalid, "groupBy %s does not apply to one tenant's usage; group by model, day or month", d)
			}
		}
	}
	q := ledger.Query{From: from, To: to, OrgID: in.OrgID, EnvID: in.EnvID, GroupBy: groupBy}
	sum, err := ledger.Summarize(ctx, s.deps.Pool, q)
	if err != nil {
		return events.UsageSummary{}, fmt.Errorf("summarize usage: %w", err)
	}
	out := events.UsageSummary{
		From:     from.Format(time.DateOnly),
		To:       to.Format(time.DateOnly),
		GroupBy:  make([]string, len(groupBy)),
		Currency: sum.Currency,
		Totals:   totalsOf(sum.Totals),
		Groups:   make([]events.UsageGroup, 0, len(sum.Groups)),
	}
	for i, d := range groupBy {
		out.GroupBy[i] = string(d)
	}
	if in.OrgID != 0 {
		out.OrgID = &in.OrgID
	}
	if in.EnvID != 0 {
		out.EnvID = &in.EnvID
	}
	for _, g := range sum.Groups {
		out.Groups = append(out.Groups, groupOf(groupBy, g))
	}
	return out, nil
}

func totalsOf(t ledger.Totals) events.UsageTotals {
	out := events.UsageTotals{
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

func groupOf(groupBy []ledger.Dimension, g ledger.Group) events.UsageGroup {
	out := events.UsageGroup{Usage: totalsOf(g.Totals)}
	if slices.Contains(groupBy, ledger.ByOrganization) || slices.Contains(groupBy, ledger.ByTenant) {
		out.OrgID = &g.OrgID
	}
	if slices.Contains(groupBy, ledger.ByTenant) {
		out.EnvID = &g.EnvID
	}
	if slices.Contains(groupBy, ledger.ByModel) {
		out.Provider, out.Model = &g.Provider, &g.Model
	}
	switch {
	case slices.Contains(groupBy, ledger.ByDay):
		out.Day = g.Period.Format(time.DateOnly)
	case slices.Contains(groupBy, ledger.ByMonth):
		out.Month = g.Period.Format("2006-01")
	}
	return out
}

// price answers a PriceQuery from the price table in force.
func (s *Service) price(_ context.Context, q events.PriceQuery) (events.ModelPrice, error) {
	prices := *s.prices.Load()
	out := events.ModelPrice{Currency: prices.Currency(), PriceVersion: prices.Label()}
	if r, ok := prices.Lookup(q.Provider, q.Model); ok {
		out.Priced = true
		out.InputPerMillionMicros, out.OutputPerMillionMicros, out.CachedPerMillionMicros = int64(r.Input), int64(r.Output), int64(r.Cached)
	}
	return out, nil
}

// unpriced lists the models whose usage arrived without a price.
func (s *Service) unpriced(ctx context.Context, _ events.UnpricedQuery) (events.UnpricedModels, error) {
	prices := *s.prices.Load()
	models, err := ledger.ListUnpriced(ctx, s.deps.Pool, prices)
	if err != nil {
		return events.UnpricedModels{}, err
	}
	out := events.UnpricedModels{
		Models:       make([]events.UnpricedModel, len(models)),
		PriceVersion: &events.PriceVersion{ID: prices.VersionID, Label: prices.Label(), Currency: prices.Currency()},
	}
	for i, m := range models {
		out.Models[i] = events.UnpricedModel{Provider: m.Provider, Model: m.Model, FirstSeenAt: m.FirstSeenAt.UTC(),
			LastSeenAt: m.LastSeenAt.UTC(), Lines: m.Lines, Calls: m.Calls, TotalTokens: m.TotalTokens, PricedNow: m.PricedNow}
	}
	return out, nil
}

// reconcileQuery compares the ledger with the converger's task records for a period and,
// when asked, repairs the gaps at the prices in force.
func (s *Service) reconcileQuery(ctx context.Context, in events.ReconcileRequest) (events.Reconciliation, error) {
	from, to, err := ledger.ParseRange(in.From, in.To, time.Now())
	if err != nil {
		return events.Reconciliation{}, natsrpc.Errorf(natsrpc.CodeInvalid, "%v", err)
	}
	if to.Sub(from) >= maxReconcileDays*24*time.Hour {
		return events.Reconciliation{}, natsrpc.Errorf(natsrpc.CodeInvalid, "reconcile at most %d days at a time", maxReconcileDays)
	}
	rep, err := ledger.Reconcile(ctx, s.deps.Pool, convergerRecords{s.deps.NC}, *s.prices.Load(), ledger.ReconcileOptions{From: from, To: to, Repair: in.Repair})
	if natsrpc.IsCode(err, natsrpc.CodeUnavailable) {
		return events.Reconciliation{}, natsrpc.Errorf(natsrpc.CodeUnavailable, "the converger, whose task records the ledger is compared with, did not answer")
	}
	if err != nil {
		return events.Reconciliation{}, fmt.Errorf("reconcile: %w", err)
	}
	if in.Repair {
		s.logger.InfoContext(ctx, "usage reconciled and repaired", "from", rep.From.Format(time.DateOnly), "to", rep.To.Format(time.DateOnly),
			"missing", len(rep.Missing), "mismatched", len(rep.Mismatched), "repriced_lines", rep.Unpriced.RepricedLines)
	}
	raw, err := json.Marshal(rep)
	if err != nil {
		return events.Reconciliation{}, fmt.Errorf("encode report: %w", err)
	}
	return events.Reconciliation{Report: raw}, nil
}
