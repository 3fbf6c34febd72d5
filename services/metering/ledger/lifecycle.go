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
)

// runtimeState is a tenant's metering_runtime row: its latest fact.
type runtimeState struct {
	envID   int64
	orgID   int64
	lastAt  *time.Time
	lastID  string
	lastUp  bool
	touched bool
}

// after reports whether the fact (at, id) comes after the tenant's latest fact.
func (st *runtimeState) after(at time.Time, id string) bool {
	return st.lastAt == nil || cmp.Or(at.Compare(*st.lastAt), strings.Compare(id, st.lastID)) > 0
}

// RecordLifecycle records a batch of tenant lifecycle facts in one transaction and books the
// container run time they settle: a fact after a tenant's latest closes the time since that
// one if it was billable; a late fact corrects the time up to the next known fact. Facts
// already recorded are skipped as duplicates. Facts are validated by the caller
// (LifecycleFact.Validate); their times are kept to the millisecond.
func (s *Store) RecordLifecycle(ctx context.Context, prices Prices, batch []LifecycleFact) (Result, error) {
	unique := uniqueFacts(batch)
	repeats := len(batch) - len(unique)
	batch = unique
	var res Result
	if len(batch) == 0 {
		return res, nil
	}
	err := pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		res = Result{Duplicates: repeats}
		states, err := lockTenants(ctx, tx, batch)
		if err != nil {
			return err
		}
		inserted, err := insertFacts(ctx, tx, batch)
		if err != nil {
			return err
		}
		// The facts of this batch recorded now; those not settled yet are left out when a late
		// fact looks for the next one.
		var fresh []string
		for _, f := range batch {
			if inserted[f.EventID] {
				fresh = append(fresh, f.EventID)
			}
		}

		var lines lineSource
		roll := newRollups()
		for _, f := range batch {
			if !inserted[f.EventID] {
				res.Duplicates++
				continue
			}
			res.Recorded++
			st := states[f.EnvID]
			st.touched = true
			up := Billable(f.State)
			var sign int64
			var from, to time.Time
			if st.after(f.At, f.EventID) {
				// The new latest fact: the time since the previous one is settled.
				if st.lastAt != nil && st.lastUp {
					sign, from, to = 1, *st.lastAt, f.At
				}
				at := f.At
				st.orgID, st.lastAt, st.lastID, st.lastUp = f.OrgID, &at, f.EventID, up
			} else {
				// A late fact: it changes whether the time from it to the next fact is billed.
				prevUp, nextAt, err := neighbours(ctx, tx, f, fresh)
				if err != nil {
					return err
				}
				switch {
				case up && !prevUp:
					sign = 1
				case !up && prevUp:
					sign = -1
				}
				from, to = f.At, nextAt
			}
			if sign != 0 && to.After(from) {
				n := bookRunTime(&lines, roll, prices, f, sign, from, to)
				res.Lines += n
			}
		}

		if err := copyLines(ctx, tx, &lines); err != nil {
			return err
		}
		if err := roll.write(ctx, tx); err != nil {
			return err
		}
		b := &pgx.Batch{}
		queueRuntime(b, states, prices.VersionID)
		return sendBatch(ctx, tx, b)
	})
	if err != nil {
		return Result{}, err
	}
	return res, nil
}

// uniqueFacts drops repeated event IDs and sorts facts by tenant, then by their own time: the
// order the transaction takes its locks in and settles the facts in.
func uniqueFacts(batch []LifecycleFact) []LifecycleFact {
	seen := make(map[string]bool, len(batch))
	out := make([]LifecycleFact, 0, len(batch))
	for _, f := range batch {
		if seen[f.EventID] {
			continue
		}
		seen[f.EventID] = true
		f.At = f.At.UTC().Truncate(time.Millisecond)
		out = append(out, f)
	}
	slices.SortFunc(out, func(a, b LifecycleFact) int {
		return cmp.Or(cmp.Compare(a.EnvID, b.EnvID), a.At.Compare(b.At), strings.Compare(a.EventID, b.EventID))
	})
	return out
}

// lockTenants creates the missing runtime rows of the batch's tenants and locks all of them in
// tenant order, so the facts of one tenant are settled by one transaction at a time.
func lockTenants(ctx context.Context, tx pgx.Tx, batch []LifecycleFact) (map[int64]*runtimeState, error) {
	var envs, orgs []int64
	for _, f := range batch {
		if len(envs) == 0 || envs[len(envs)-1] != f.EnvID {
			envs, orgs = append(envs, f.EnvID), append(orgs, f.OrgID)
		}
	}
	_, err := tx.Exec(ctx, `
		INSERT INTO metering_runtime (env_id, org_id)
		SELECT * FROM unnest($1::int8[], $2::int8[])
		ON CONFLICT DO NOTHING`, envs, orgs)
	if err != nil {
		return nil, fmt.Errorf("create runtime rows: %w", err)
	}
	rows, err := tx.Query(ctx, `
		SELECT env_id, org_id, last_at, coalesce(last_event_id, ''), last_up
		FROM metering_runtime WHERE env_id = ANY($1)
		ORDER BY env_id FOR UPDATE`, envs)
	if err != nil {
		return nil, fmt.Errorf("lock runtime rows: %w", err)
	}
	states := make(map[int64]*runtimeState, len(envs))
	var st runtimeState
	_, err = pgx.ForEachRow(rows, []any{&st.envID, &st.orgID, &st.lastAt, &st.lastID, &st.lastUp}, func() error {
		s := st
		states[s.envID] = &s
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("lock runtime rows: %w", err)
	}
	return states, nil
}

// insertFacts inserts the facts, skipping those already recorded, and returns the event IDs it
// inserted: the exactly-once key of lifecycle events.
func insertFacts(ctx context.Context, tx pgx.Tx, batch []LifecycleFact) (map[string]bool, error) {
	n := len(batch)
	ids, envs, orgs := make([]string, n), make([]int64, n), make([]int64, n)
	states, ups, ats := make([]string, n), make([]bool, n), make([]time.Time, n)
	for i, f := range batch {
		ids[i], envs[i], orgs[i] = f.EventID, f.EnvID, f.OrgID
		states[i], ups[i], ats[i] = string(f.State), Billable(f.State), f.At
	}
	rows, err := tx.Query(ctx, `
		INSERT INTO metering_lifecycle_facts (event_id, env_id, org_id, state, up, at)
		SELECT * FROM unnest($1::text[], $2::int8[], $3::int8[], $4::text[], $5::bool[], $6::timestamptz[])
		ON CONFLICT DO NOTHING
		RETURNING event_id`, ids, envs, orgs, states, ups, ats)
	if err != nil {
		return nil, fmt.Errorf("insert lifecycle facts: %w", err)
	}
	inserted := make(map[string]bool, n)
	var id string
	if _, err := pgx.ForEachRow(rows, []any{&id}, func() error { inserted[id] = true; return nil }); err != nil {
		return nil, fmt.Errorf("insert lifecycle facts: %w", err)
	}
	return inserted, nil
}

// neighbours returns whether the tenant was billable just before f (by the facts settled so
// far) and when the next settled fact after f is. The facts recorded by this batch and not
// settled yet all come after f, so fresh (this batch's new facts) are left out of the search for
// the next one; those settled before f come before it and do not match.
func neighbours(ctx context.Context, tx pgx.Tx, f LifecycleFact, fresh []string) (prevUp bool, nextAt time.Time, err error) {
	err = tx.QueryRow(ctx, `
		SELECT up FROM metering_lifecycle_facts
		WHERE env_id = $1 AND (at, event_id) < ($2, $3)
		ORDER BY at DESC, event_id DESC LIMIT 1`, f.EnvID, f.At, f.EventID).Scan(&prevUp)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return false, time.Time{}, fmt.Errorf("previous lifecycle fact: %w", err)
	}
	err = tx.QueryRow(ctx, `
		SELECT at FROM metering_lifecycle_facts
		WHERE env_id = $1 AND (at, event_id) > ($2, $3) AND event_id <> ALL($4)
		ORDER BY at, event_id LIMIT 1`, f.EnvID, f.At, f.EventID, fresh).Scan(&nextAt)
	if err != nil {
		// A late fact has a later one by definition: the tenant's latest.
		return false, time.Time{}, fmt.Errorf("next lifecycle fact: %w", err)
	}
	return prevUp, nextAt, nil
}

// bookRunTime writes sign × [from, to) of run time as ledger lines of the fact, one per UTC day
// the time falls in, and adds them to the rollups. It returns the number of lines.
func bookRunTime(lines *lineSource, roll *rollups, prices Prices, f LifecycleFact, sign int64, from, to time.Time) int {
	n := 0
	for start := from; start.Before(to); n++ {
		end := utcDay(start).AddDate(0, 0, 1)
		if end.After(to) {
			end = to
		}
		ms := sign * end.Sub(start).Milliseconds()
		l := &line{
			eventID:     f.EventID,
			line:        int16(n),
			kind:        KindContainer,
			envID:       f.EnvID,
			orgID:       f.OrgID,
			occurredAt:  start,
			endedAt:     end,
			containerMS: ms,
			versionID:   prices.VersionID,
			cost:        int64(prices.ContainerCost(ms)),
			priced:      true,
		}
		lines.add(l)
		roll.add(l)
		start = end
	}
	return n
}

// queueRuntime queues the update of the runtime rows of the tenants whose facts were settled.
func queueRuntime(b *pgx.Batch, states map[int64]*runtimeState, versionID int64) {
	var envs, orgs []int64
	var ats []time.Time
	var ids []string
	var ups []bool
	for _, st := range states {
		if !st.touched {
			continue
		}
		envs, orgs, ats = append(envs, st.envID), append(orgs, st.orgID), append(ats, *st.lastAt)
		ids, ups = append(ids, st.lastID), append(ups, st.lastUp)
	}
	if len(envs) == 0 {
		return
	}
	b.Queue(`
		UPDATE metering_runtime AS r SET org_id = u.org_id, last_at = u.at, last_event_id = u.id,
			last_up = u.up, price_version_id = $6, updated_at = now()
		FROM unnest($1::int8[], $2::int8[], $3::timestamptz[], $4::text[], $5::bool[]) AS u(env_id, org_id, at, id, up)
		WHERE r.env_id = u.env_id`, envs, orgs, ats, ids, ups, versionID)
}
