package ledger

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/convergence-dev/convergence/services/metering/pricing"
)

// Dimension is what a summary groups usage by.
type Dimension string

// The dimensions a summary can group by. Tenant groups also carry their organization; day and
// month are UTC and exclude each other.
const (
	ByOrganization Dimension = "organization"
	ByTenant       Dimension = "tenant"
	ByModel        Dimension = "model"
	ByDay          Dimension = "day"
	ByMonth        Dimension = "month"
)

// Dimensions lists every dimension, in the order groups are sorted by.
var Dimensions = []Dimension{ByOrganization, ByTenant, ByModel, ByDay, ByMonth}

// ParseDimensions parses a comma-separated list of dimensions, such as "tenant,month". Empty
// means no grouping: totals only.
func ParseDimensions(s string) ([]Dimension, error) {
	var out []Dimension
	for part := range strings.SplitSeq(s, ",") {
		d := Dimension(strings.ToLower(strings.TrimSpace(part)))
		switch {
		case d == "":
			continue
		case !slices.Contains(Dimensions, d):
			return nil, fmt.Errorf("unknown groupBy %q: use a comma list of organization, tenant, model, day, month", part)
		case slices.Contains(out, d):
			return nil, fmt.Errorf("groupBy names %q twice", d)
		}
		out = append(out, d)
	}
	if slices.Contains(out, ByDay) && slices.Contains(out, ByMonth) {
		return nil, errors.New("groupBy day and month exclude each other: pick one")
	}
	return out, nil
}

// Query asks for the usage of a range of UTC days, optionally of one organization or tenant,
// grouped by some dimensions.
type Query struct {
	// From and To are the first and the last day of the range, inclusive, as UTC midnights.
	From, To time.Time
	// OrgID and EnvID, when not zero, keep only that organization's or tenant's usage.
	OrgID, EnvID int64
	GroupBy      []Dimension
	// Now is where open run segments end; zero means the time of the call.
	Now time.Time
}

// Validate says what is wrong with q.
func (q Query) Validate() error {
	switch {
	case q.From.IsZero() || q.To.IsZero():
		return errors.New("a usage query needs both a first and a last day")
	case !q.From.Equal(utcDay(q.From)) || !q.To.Equal(utcDay(q.To)):
		return errors.New("a usage query's days must be UTC midnights")
	case q.To.Before(q.From):
		return fmt.Errorf("the last day %s is before the first day %s", q.To.Format(time.DateOnly), q.From.Format(time.DateOnly))
	}
	if slices.Contains(q.GroupBy, ByDay) && slices.Contains(q.GroupBy, ByMonth) {
		return errors.New("groupBy day and month exclude each other")
	}
	return nil
}

func (q Query) has(d Dimension) bool { return slices.Contains(q.GroupBy, d) }

// Totals are usage sums. Token counts are named as events.Usage names them.
type Totals struct {
	Calls          int64
	Tasks          int64
	FailedTasks    int64
	InputTokens    int64
	OutputTokens   int64
	CachedTokens   int64
	TotalTokens    int64
	ContainerMS    int64
	Cost           pricing.Micros // priced usage only: see UnpricedTokens
	UnpricedCalls  int64
	UnpricedTokens int64
	ScoreSum       float64
	ScoreCount     int64 // completed tasks with a score
}

// ContainerSeconds is the container run time in seconds.
func (t Totals) ContainerSeconds() float64 { return float64(t.ContainerMS) / 1000 }

// AverageScore is the mean convergence score of the completed tasks, and false when there
// were none.
func (t Totals) AverageScore() (float64, bool) {
	if t.ScoreCount == 0 {
		return 0, false
	}
	return t.ScoreSum / float64(t.ScoreCount), true
}

func (t *Totals) add(o Totals) {
	t.Calls += o.Calls
	t.Tasks += o.Tasks
	t.FailedTasks += o.FailedTasks
	t.InputTokens += o.InputTokens
	t.OutputTokens += o.OutputTokens
	t.CachedTokens += o.CachedTokens
	t.TotalTokens += o.TotalTokens
	t.ContainerMS += o.ContainerMS
	t.Cost += o.Cost
	t.UnpricedCalls += o.UnpricedCalls
	t.UnpricedTokens += o.UnpricedTokens
	t.ScoreSum += o.ScoreSum
	t.ScoreCount += o.ScoreCount
}

// Group is the usage of one combination of the grouped dimensions. Fields of dimensions not
// grouped by are zero; a tenant group also has its organization.
type Group struct {
	OrgID    int64
	EnvID    int64
	Provider string // "" for container time and usage of no known model
	Model    string
	Period   time.Time // the day, or the first day of the month
	Totals
}

// Summary answers a Query.
type Summary struct {
	Query    Query
	Currency string
	Totals   Totals
	// Groups are sorted by organization, tenant, provider, model and period. Empty when the
	// query groups by nothing.
	Groups []Group
}

// Summarize sums the usage q asks for from the rollups, plus the run time of open segments up
// to q.Now. It reads at most one rollup row per tenant, model and month for whole months in
// the range, and per day for the days at its ends (or every day when grouping by day), plus the
// few seconds of deltas not merged yet: its cost does not grow with the ledger. One statement
// reads them all, so a merge running meanwhile is seen whole or not at all.
func Summarize(ctx context.Context, db DB, q Query) (Summary, error) {
	if err := q.Validate(); err != nil {
		return Summary{}, err
	}
	if q.Now.IsZero() {
		q.Now = time.Now()
	}
	sum := Summary{Query: q}
	groups := map[Group]*Group{} // keyed by a Group with zero Totals

	// One snapshot for the rollups and the open segments: a fact that closes a segment and books
	// it into the rollups meanwhile is seen on one side or the other, never neither or both.
	err := pgx.BeginTxFunc(ctx, db, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		sql, args := summarySQL(q)
		rows, err := tx.Query(ctx, sql, args...)
		if err != nil {
			return fmt.Errorf("summarize usage: %w", err)
		}
		var g Group
		var period *time.Time
		var cost int64
		_, err = pgx.ForEachRow(rows, []any{&g.OrgID, &g.EnvID, &g.Provider, &g.Model, &period,
			&g.Calls, &g.Tasks, &g.FailedTasks, &g.ScoreSum, &g.ScoreCount, &g.InputTokens, &g.OutputTokens,
			&g.CachedTokens, &g.TotalTokens, &g.ContainerMS, &cost, &g.UnpricedCalls, &g.UnpricedTokens,
		}, func() error {
			g.Cost = pricing.Micros(cost)
			g.Period = time.Time{}
			if period != nil {
				g.Period = period.UTC()
			}
			group(groups, g).add(g.Totals)
			return nil
		})
		if err != nil {
			return fmt.Errorf("summarize usage: %w", err)
		}
		if err := addOpenSegments(ctx, tx, q, groups); err != nil {
			return err
		}
		sum.Currency, err = currency(ctx, tx)
		return err
	})
	if err != nil {
		return Summary{}, err
	}

	for _, g := range groups {
		sum.Totals.add(g.Totals)
		if len(q.GroupBy) > 0 {
			sum.Groups = append(sum.Groups, *g)
		}
	}
	slices.SortFunc(sum.Groups, func(a, b Group) int {
		return cmp.Or(cmp.Compare(a.OrgID, b.OrgID), cmp.Compare(a.EnvID, b.EnvID),
			strings.Compare(a.Provider, b.Provider), strings.Compare(a.Model, b.Model), a.Period.Compare(b.Period))
	})
	return sum, nil
}

// group returns the group of g's key, created empty if missing.
func group(groups map[Group]*Group, g Group) *Group {
	key := Group{OrgID: g.OrgID, EnvID: g.EnvID, Provider: g.Provider, Model: g.Model, Period: g.Period}
	if p, ok := groups[key]; ok {
		return p
	}
	p := &key
	groups[key] = p
	return p
}

// summarySQL builds the rollup query of q: whole months from the monthly rollup, the days at
// either end (or all days, when grouping by day) from the daily rollup. Only fixed SQL is
// put together here; every value is a parameter.
func summarySQL(q Query) (string, []any) {
	from, end := q.From, q.To.AddDate(0, 0, 1) // [from, end)
	monthFrom := utcMonth(from)
	if !monthFrom.Equal(from) {
		monthFrom = monthFrom.AddDate(0, 1, 0)
	}
	monthEnd := utcMonth(end)
	useMonthly := !q.has(ByDay) && monthFrom.Before(monthEnd)

	args := []any{from, end}
	if useMonthly {
		args = append(args, monthFrom, monthEnd)
	}
	filter := ""
	if q.OrgID != 0 {
		args = append(args, q.OrgID)
		filter += fmt.Sprintf(" AND org_id = $%d", len(args))
	}
	if q.EnvID != 0 {
		args = append(args, q.EnvID)
		filter += fmt.Sprintf(" AND env_id = $%d", len(args))
	}
	const cols = `org_id, env_id, provider, model, calls, tasks, failed_tasks, score_sum, score_count,
		input_tokens, output_tokens, cached_tokens, total_tokens, container_ms, cost_micros,
		unpriced_calls, unpriced_tokens`
	// Deltas not merged yet are in metering_rollup_pending, by day, whatever the range.
	parts := []string{`SELECT day AS period, ` + cols + ` FROM metering_rollup_pending WHERE day >= $1 AND day < $2` + filter}
	if useMonthly { // $3, $4: the range's whole months
		parts = append(parts,
			`SELECT month, `+cols+` FROM metering_rollup_monthly WHERE month >= $3 AND month < $4`+filter,
			`SELECT day, `+cols+` FROM metering_rollup_daily WHERE ((day >= $1 AND day < $3) OR (day >= $4 AND day < $2))`+filter)
	} else {
		parts = append(parts, `SELECT day, `+cols+` FROM metering_rollup_daily WHERE day >= $1 AND day < $2`+filter)
	}

	keys := []string{"0::int8", "0::int8", "''::text", "''::text", "NULL::date"}
	var groupBy []string
	if q.has(ByOrganization) {
		keys[0] = "org_id"
		groupBy = append(groupBy, "org_id")
	} else if q.has(ByTenant) {
		keys[0] = "max(org_id)"
	}
	if q.has(ByTenant) {
		keys[1] = "env_id"
		groupBy = append(groupBy, "env_id")
	}
	if q.has(ByModel) {
		keys[2], keys[3] = "provider", "model"
		groupBy = append(groupBy, "provider", "model")
	}
	switch {
	case q.has(ByDay):
		keys[4] = "period"
		groupBy = append(groupBy, "period")
	case q.has(ByMonth):
		keys[4] = "date_trunc('month', period)::date"
		groupBy = append(groupBy, keys[4])
	}
	sql := `WITH r AS (` + strings.Join(parts, "\nUNION ALL\n") + `)
		SELECT ` + strings.Join(keys, ", ") + `,
			coalesce(sum(calls), 0)::int8, coalesce(sum(tasks), 0)::int8, coalesce(sum(failed_tasks), 0)::int8,
			coalesce(sum(score_sum), 0)::float8, coalesce(sum(score_count), 0)::int8,
			coalesce(sum(input_tokens), 0)::int8, coalesce(sum(output_tokens), 0)::int8,
			coalesce(sum(cached_tokens), 0)::int8, coalesce(sum(total_tokens), 0)::int8,
			coalesce(sum(container_ms), 0)::int8, coalesce(sum(cost_micros), 0)::int8,
			coalesce(sum(unpriced_calls), 0)::int8, coalesce(sum(unpriced_tokens), 0)::int8
		FROM r`
	if len(groupBy) > 0 {
		sql += ` GROUP BY ` + strings.Join(groupBy, ", ")
	} else {
		sql += ` HAVING count(*) > 0`
	}
	return sql, args
}

// addOpenSegments adds the run time of tenants whose latest fact is billable, from that fact
// (or the start of the range) to q.Now (or the end of the range), priced at the price version
// in force when the segment was recorded.
func addOpenSegments(ctx context.Context, tx pgx.Tx, q Query, groups map[Group]*Group) error {
	from, end := q.From, q.To.AddDate(0, 0, 1)
	if q.Now.Before(end) {
		end = q.Now
	}
	if !end.After(from) {
		return nil
	}
	args := []any{end}
	filter := ""
	if q.OrgID != 0 {
		args = append(args, q.OrgID)
		filter += fmt.Sprintf(" AND rt.org_id = $%d", len(args))
	}
	if q.EnvID != 0 {
		args = append(args, q.EnvID)
		filter += fmt.Sprintf(" AND rt.env_id = $%d", len(args))
	}
	rows, err := tx.Query(ctx, `
		SELECT rt.env_id, rt.org_id, rt.last_at, coalesce(v.container_second_micros, 0)
		FROM metering_runtime rt LEFT JOIN metering_price_versions v ON v.id = rt.price_version_id
		WHERE rt.last_up AND rt.last_at < $1`+filter, args...)
	if err != nil {
		return fmt.Errorf("open run segments: %w", err)
	}
	var envID, orgID, price int64
	var since time.Time
	_, err = pgx.ForEachRow(rows, []any{&envID, &orgID, &since, &price}, func() error {
		start := since.UTC()
		if start.Before(from) {
			start = from
		}
		for start.Before(end) {
			stop := utcDay(start).AddDate(0, 0, 1)
			if stop.After(end) {
				stop = end
			}
			ms := stop.Sub(start).Milliseconds()
			key := Group{}
			if q.has(ByOrganization) || q.has(ByTenant) {
				key.OrgID = orgID
			}
			if q.has(ByTenant) {
				key.EnvID = envID
			}
			switch {
			case q.has(ByDay):
				key.Period = utcDay(start)
			case q.has(ByMonth):
				key.Period = utcMonth(start)
			}
			t := Totals{ContainerMS: ms, Cost: pricing.ContainerCost(pricing.Micros(price), ms)}
			group(groups, key).add(t)
			start = stop
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("open run segments: %w", err)
	}
	return nil
}

// currency returns the currency of the ledger's prices, or that of the built-in table before
// any version is registered.
func currency(ctx context.Context, tx pgx.Tx) (string, error) {
	var c string
	err := tx.QueryRow(ctx, `SELECT currency FROM metering_price_versions ORDER BY id DESC LIMIT 1`).Scan(&c)
	if errors.Is(err, pgx.ErrNoRows) {
		return pricing.Default().Currency(), nil
	}
	if err != nil {
		return "", fmt.Errorf("ledger currency: %w", err)
	}
	return c, nil
}
