package ledger

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// line is one ledger row. Empty strings and the zero time are NULL in the columns that allow
// it; so are score and cost when hasScore and priced are false.
type line struct {
	eventID     string
	line        int16
	kind        string
	envID       int64
	orgID       int64
	taskID      string
	occurredAt  time.Time
	endedAt     time.Time
	provider    string
	model       string
	agent       string
	calls       int64
	tasks       int16
	status      string
	score       float64
	hasScore    bool
	input       int64
	output      int64
	cached      int64
	total       int64
	containerMS int64
	versionID   int64
	cost        int64
	priced      bool // false: the model had no price, and cost is NULL
}

// unpriced reports whether the line is usage without a price.
func (l *line) unpriced() bool { return !l.priced }

// lineColumnNames are the ledger columns of a line, in the order lineSource gives them.
var lineColumnNames = []string{"event_id", "line", "kind", "env_id", "org_id", "task_id", "occurred_at",
	"ended_at", "provider", "model", "agent", "calls", "tasks", "task_status", "score", "input_tokens",
	"output_tokens", "cached_tokens", "total_tokens", "container_ms", "price_version_id", "cost_micros"}

// lineSource is the pgx.CopyFromSource of a COPY of lines into the ledger.
type lineSource struct {
	lines []*line
	cur   int   // the row the COPY reads, from 1
	row   []any // its values: pgx encodes a row before it asks for the next
}

func (s *lineSource) add(l *line) { s.lines = append(s.lines, l) }

func (s *lineSource) Next() bool { s.cur++; return s.cur <= len(s.lines) }

func (s *lineSource) Err() error { return nil }

// Values gives NULLs as nil and every other value as itself, the types pgx encodes on its
// fastest path.
func (s *lineSource) Values() ([]any, error) {
	l := s.lines[s.cur-1]
	s.row = append(s.row[:0], l.eventID, l.line, l.kind, l.envID, l.orgID, nullString(l.taskID), l.occurredAt,
		nullTime(l.endedAt), l.provider, l.model, l.agent, l.calls, l.tasks, nullString(l.status), nil,
		l.input, l.output, l.cached, l.total, l.containerMS, l.versionID, nil)
	if l.hasScore {
		s.row[14] = l.score
	}
	if l.priced {
		s.row[21] = l.cost
	}
	return s.row, nil
}

func nullString(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func nullTime(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t
}

// copyLines COPYs lines into the ledger: lines that need no key check, or that are checked by
// the ledger's unique keys failing the COPY.
func copyLines(ctx context.Context, tx pgx.Tx, s *lineSource) error {
	if len(s.lines) == 0 {
		return nil
	}
	s.cur = 0
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{"metering_ledger"}, lineColumnNames, s); err != nil {
		return fmt.Errorf("insert ledger lines: %w", err)
	}
	return nil
}

// insertHeads inserts line-0 rows, skipping those whose key (event or task) is already in the
// ledger, waiting where another transaction holds one, and returns the event IDs it inserted.
func insertHeads(ctx context.Context, tx pgx.Tx, heads []*line) (map[string]bool, error) {
	rows, err := tx.Query(ctx, `
		INSERT INTO metering_ledger (event_id, line, kind, env_id, org_id, task_id, occurred_at,
			ended_at, provider, model, agent, calls, tasks, task_status, score, input_tokens,
			output_tokens, cached_tokens, total_tokens, container_ms, price_version_id, cost_micros)
		SELECT * FROM unnest($1::text[], $2::int2[], $3::text[], $4::int8[], $5::int8[], $6::text[],
			$7::timestamptz[], $8::timestamptz[], $9::text[], $10::text[], $11::text[], $12::int8[],
			$13::int2[], $14::text[], $15::float8[], $16::int8[], $17::int8[], $18::int8[],
			$19::int8[], $20::int8[], $21::int8[], $22::int8[])
		ON CONFLICT DO NOTHING
		RETURNING event_id`, columns(heads)...)
	if err != nil {
		return nil, fmt.Errorf("insert ledger heads: %w", err)
	}
	inserted := make(map[string]bool, len(heads))
	var id string
	_, err = pgx.ForEachRow(rows, []any{&id}, func() error {
		inserted[id] = true
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("insert ledger heads: %w", err)
	}
	return inserted, nil
}

// columns returns lines column by column, as arrays for unnest, in lineColumnNames order.
func columns(lines []*line) []any {
	n := len(lines)
	var (
		eventID, kind, provider, model, agent      = make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		lineNo, tasks                              = make([]int16, n), make([]int16, n)
		envID, orgID, calls, input, output, cached = make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n)
		total, containerMS, versionID              = make([]int64, n), make([]int64, n), make([]int64, n)
		taskID, status                             = make([]*string, n), make([]*string, n)
		occurredAt, endedAt                        = make([]time.Time, n), make([]*time.Time, n)
		score, cost                                = make([]*float64, n), make([]*int64, n)
	)
	for i, l := range lines {
		eventID[i], lineNo[i], kind[i], envID[i], orgID[i] = l.eventID, l.line, l.kind, l.envID, l.orgID
		occurredAt[i], provider[i], model[i], agent[i], calls[i], tasks[i] = l.occurredAt, l.provider, l.model, l.agent, l.calls, l.tasks
		input[i], output[i], cached[i], total[i], containerMS[i], versionID[i] = l.input, l.output, l.cached, l.total, l.containerMS, l.versionID
		if l.taskID != "" {
			taskID[i] = &l.taskID
		}
		if l.status != "" {
			status[i] = &l.status
		}
		if !l.endedAt.IsZero() {
			endedAt[i] = &l.endedAt
		}
		if l.hasScore {
			score[i] = &l.score
		}
		if l.priced {
			cost[i] = &l.cost
		}
	}
	return []any{eventID, lineNo, kind, envID, orgID, taskID, occurredAt, endedAt, provider, model, agent,
		calls, tasks, status, score, input, output, cached, total, containerMS, versionID, cost}
}
