package ledger

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/convergence-dev/convergence/pkg/events"
)

// DB is what the ledger needs of a database: a *pgxpool.Pool, or a single connection.
type DB interface {
	Begin(ctx context.Context) (pgx.Tx, error)
	BeginTx(ctx context.Context, opts pgx.TxOptions) (pgx.Tx, error)
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Kinds of ledger lines.
const (
	KindTask       = "task"
	KindContainer  = "container"
	KindAdjustment = "adjustment"
)

// Store writes the ledger. It is safe for concurrent use, also from several processes on one
// database.
type Store struct {
	db DB
}

// NewStore returns a Store on db.
func NewStore(db DB) *Store { return &Store{db: db} }

// TaskUsage is what one finished task used, as its converge.completed or converge.failed event
// reports it: the unit RecordTasks counts once.
type TaskUsage struct {
	EventID    string
	TaskID     string
	EnvID      int64
	OrgID      int64
	Failed     bool
	Score      *float64 // the convergence score of a completed task
	FinishedAt time.Time
	// Agents are the priced lines. When there are none, Usage is recorded as one line of no
	// known model, which is priced only if it used no tokens.
	Agents []events.AgentUsage
	Usage  events.Usage

	kind string // KindTask unless a reconciliation writes an adjustment
}

// maxLines bounds the agent lines of one task, far above what a task has (two agents and a
// synthesis), so line numbers fit the ledger's SMALLINT.
const maxLines = 1000

// Validate says what makes u unfit for the ledger. A task with no ID or tenant, negative
// counts, or cached input above input cannot be billed right, so it is refused rather than
// guessed at.
func (u TaskUsage) Validate() error {
	switch {
	case u.EventID == "":
		return errors.New("event has no id")
	case u.TaskID == "":
		return errors.New("task has no taskId")
	case u.EnvID <= 0 || u.OrgID <= 0:
		return fmt.Errorf("task %s: envId %d and orgId %d must be positive", u.TaskID, u.EnvID, u.OrgID)
	case u.FinishedAt.IsZero():
		return fmt.Errorf("task %s has no finish time", u.TaskID)
	case len(u.Agents) > maxLines:
		return fmt.Errorf("task %s has %d agent usage lines; at most %d are accepted", u.TaskID, len(u.Agents), maxLines)
	case u.Score != nil && (*u.Score < 0 || *u.Score > 100):
		return fmt.Errorf("task %s: convergence score %v is outside 0-100", u.TaskID, *u.Score)
	}
	if len(u.Agents) == 0 {
		return validUsage(u.TaskID, "usage", 0, u.Usage)
	}
	for i, a := range u.Agents {
		if err := validUsage(u.TaskID, fmt.Sprintf("agents[%d]", i), a.Calls, a.Usage); err != nil {
			return err
		}
	}
	return nil
}

func validUsage(taskID, where string, calls int64, u events.Usage) error {
	if calls < 0 || u.InputTokens < 0 || u.OutputTokens < 0 || u.CachedTokens < 0 || u.TotalTokens < 0 {
		return fmt.Errorf("task %s: %s has a negative count", taskID, where)
	}
	if u.CachedTokens > u.InputTokens {
		return fmt.Errorf("task %s: %s has %d cached tokens but %d input tokens; input includes cached", taskID, where, u.CachedTokens, u.InputTokens)
	}
	return nil
}

// LifecycleFact is a tenant lifecycle fact: at At, tenant EnvID entered State.
type LifecycleFact struct {
	EventID string
	EnvID   int64
	OrgID   int64
	State   events.TenantState
	At      time.Time
}

// Validate says what makes f unfit for the ledger.
func (f LifecycleFact) Validate() error {
	switch {
	case f.EventID == "":
		return errors.New("event has no id")
	case f.EnvID <= 0 || f.OrgID <= 0:
		return fmt.Errorf("lifecycle fact: envId %d and orgId %d must be positive", f.EnvID, f.OrgID)
	case !f.State.Valid():
		return fmt.Errorf("lifecycle fact for tenant %d: unknown state %q", f.EnvID, f.State)
	case f.At.IsZero():
		return fmt.Errorf("lifecycle fact for tenant %d has no time", f.EnvID)
	}
	return nil
}

// Billable reports whether a tenant container in state s is billed for its run time: while it
// runs, healthy or not.
func Billable(s events.TenantState) bool {
	return s == events.StateRunning || s == events.StateUnhealthy
}

// Result says what a Record call did.
type Result struct {
	// Recorded counts the source events recorded now; Duplicates those recorded before, or
	// repeated within the batch.
	Recorded, Duplicates int
	// Conflicts are events for a task that the ledger already counted under another event ID.
	// They are not counted again.
	Conflicts []Conflict
	// Lines counts the ledger lines written.
	Lines int
	// UnpricedLines and UnpricedTokens count the new usage that had no price.
	UnpricedLines, UnpricedTokens int64
}

// Conflict is an event about a task the ledger already holds under another event.
type Conflict struct {
	EventID, TaskID string
}

// utcDay returns the start of t's UTC day.
func utcDay(t time.Time) time.Time {
	y, m, d := t.UTC().Date()
	return time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
}

// utcMonth returns the first day of t's UTC month.
func utcMonth(t time.Time) time.Time {
	y, m, _ := t.UTC().Date()
	return time.Date(y, m, 1, 0, 0, 0, 0, time.UTC)
}
