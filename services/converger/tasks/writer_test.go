package tasks_test

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/convergence-dev/convergence/internal/outbox"
	"github.com/convergence-dev/convergence/internal/pgrole"
	"github.com/convergence-dev/convergence/internal/pgtest"
	"github.com/convergence-dev/convergence/internal/seal"
	"github.com/convergence-dev/convergence/pkg/events"
	"github.com/convergence-dev/convergence/services/converger/engine"
	"github.com/convergence-dev/convergence/services/converger/llm"
	"github.com/convergence-dev/convergence/services/converger/tasks"
	"github.com/convergence-dev/convergence/services/converger/webhook"
)

func TestWriter_ConcurrentWritesShareBatches_SuccessMeansCommitted(t *testing.T) {
	t.Parallel()
	pool := pgtest.NewFor(t, pgrole.Converger)
	ob := outbox.New(pool)
	w := tasks.NewWriter(pool, 64, 2)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	defer func() {
		cancel()
		require.NoError(t, <-done)
	}()
	store := tasks.NewStore(pool, webhook.NewSecrets(seal.Generate())).GroupCommit(w)

	const n = 40
	claims := make([]tasks.Claim, n)
	for i := range claims {
		_, id := newTask(t, pool, ob)
		var err error
		claims[i], err = store.Claim(t.Context(), events.ConvergeRequest{TaskID: id}, "")
		require.NoError(t, err)
	}
	turn := engine.Turn{Agent: engine.AgentA, Round: 1, Valid: true, Attempts: 1, Usage: llm.Usage{InputTokens: 7, OutputTokens: 3}}
	// Every task saves its first turn at once; a few save it twice, which the primary key
	// refuses and which fails whatever batch it lands in.
	var wg sync.WaitGroup
	ok := make([]bool, n)
	for i := range claims {
		wg.Go(func() { ok[i] = store.SaveTurns(t.Context(), claims[i], turn) == nil })
		if i%10 == 0 {
			wg.Go(func() { _ = store.SaveTurns(t.Context(), claims[i], turn) })
		}
	}
	wg.Wait()
	for i, c := range claims {
		var saved int
		require.NoError(t, pool.QueryRow(t.Context(), `SELECT count(*) FROM convergence_turns WHERE task_id = $1`, c.TaskID).Scan(&saved))
		if ok[i] {
			require.Equal(t, 1, saved, "a write that reported success is committed")
		}
		require.LessOrEqual(t, saved, 1)
	}

	// The fence holds through the writer.
	later, err := store.Claim(t.Context(), events.ConvergeRequest{TaskID: claims[1].TaskID}, "")
	require.NoError(t, err)
	rd := engine.Round{Number: 1, B: engine.Turn{Agent: engine.AgentB, Round: 1, Valid: true, Attempts: 1}, Score: engine.Score{Value: 40}}
	_, _, err = store.SaveRound(t.Context(), claims[1], []engine.Turn{rd.B}, rd)
	require.ErrorIs(t, err, tasks.ErrFenced)
	_, cancelRequested, err := store.SaveRound(t.Context(), later, []engine.Turn{rd.B}, rd)
	require.NoError(t, err)
	require.False(t, cancelRequested)
}

// writerFixture is a writer that is not running yet, a store that writes through it, and the
// same store without it for setting tasks up.
type writerFixture struct {
	pool          *pgxpool.Pool
	w             *tasks.Writer
	direct, store *tasks.Store
}

func newWriterFixture(t *testing.T) writerFixture {
	t.Helper()
	pool := pgtest.NewFor(t, pgrole.Converger)
	w := tasks.NewWriter(pool, 8, 1)
	direct := tasks.NewStore(pool, webhook.NewSecrets(seal.Generate()))
	return writerFixture{pool: pool, w: w, direct: direct, store: direct.GroupCommit(w)}
}

// claimed records a new task and claims it, and returns the claim.
func (f writerFixture) claimed(t *testing.T) tasks.Claim {
	t.Helper()
	_, id := newTask(t, f.pool, outbox.New(f.pool))
	c, err := f.direct.Claim(t.Context(), events.ConvergeRequest{TaskID: id}, "")
	require.NoError(t, err)
	return c
}

// run runs the writer until the test ends.
func (f writerFixture) run(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
}

// rows returns how many rounds and turns task id has.
func (f writerFixture) rows(t *testing.T, id string) (rounds, turns int) {
	t.Helper()
	require.NoError(t, f.pool.QueryRow(t.Context(), `SELECT (SELECT count(*) FROM convergence_rounds WHERE task_id = $1),
		(SELECT count(*) FROM convergence_turns WHERE task_id = $1)`, id).Scan(&rounds, &turns))
	return rounds, turns
}

// round is round n with both its turns.
func round(n, score int) engine.Round {
	return engine.Round{Number: n, A: engine.Turn{Agent: engine.AgentA, Round: n, Valid: true, Attempts: 1},
		B: engine.Turn{Agent: engine.AgentB, Round: n, Valid: true, Attempts: 1}, Score: engine.Score{Value: score}}
}

func TestWriter_StartRound_ReturnsAtOnceAndReportsOnceCommitted(t *testing.T) {
	t.Parallel()
	f := newWriterFixture(t)
	c := f.claimed(t)
	rd := round(1, 40)
	type outcome struct {
		view []byte
		err  error
	}
	saved := make(chan outcome, 1)
	// The writer is not running yet: the write can only be queued, and StartRound returns.
	f.store.StartRound(t.Context(), c, rd.Turns(), rd, func(view []byte, _ bool, err error) { saved <- outcome{view, err} })
	rounds, _ := f.rows(t, c.TaskID)
	require.Zero(t, rounds)
	require.Empty(t, saved)

	f.run(t)
	got := <-saved
	require.NoError(t, got.err)
	rounds, turns := f.rows(t, c.TaskID)
	require.Equal(t, [2]int{1, 2}, [2]int{rounds, turns}, "reported once committed")
	want, err := json.Marshal(tasks.RoundViewOf(c.TaskID, rd))
	require.NoError(t, err)
	require.JSONEq(t, string(want), string(got.view), "the view stored is the one handed back to stream")
}

func TestWriter_WritesQueuedWhenItStops_FailInsteadOfHanging(t *testing.T) {
	t.Parallel()
	f := newWriterFixture(t)
	c := f.claimed(t)
	saved := make(chan error, 1)
	rd := round(1, 40)
	f.store.StartRound(t.Context(), c, rd.Turns(), rd, func(_ []byte, _ bool, err error) { saved <- err })
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	require.NoError(t, f.w.Run(ctx))
	require.ErrorContains(t, <-saved, "task writer stopped")
	rounds, turns := f.rows(t, c.TaskID)
	require.Zero(t, rounds+turns)
}

func TestWriter_RoundsOfOneBatch_OneStatementThatFencesEachRun(t *testing.T) {
	t.Parallel()
	f := newWriterFixture(t)
	stale := f.claimed(t)
	current, err := f.direct.Claim(t.Context(), events.ConvergeRequest{TaskID: stale.TaskID}, "")
	require.NoError(t, err)
	other := f.claimed(t)
	_, err = f.pool.Exec(t.Context(), `UPDATE convergence_tasks SET cancel_requested_at = now() WHERE id = $1`, other.TaskID)
	require.NoError(t, err)

	type outcome struct {
		cancel bool
		err    error
	}
	results := make([]chan outcome, 3)
	// Queued before the writer runs, so the three share its first batch.
	for i, c := range []tasks.Claim{stale, current, other} {
		results[i] = make(chan outcome, 1)
		rd := round(1, 10*(i+1))
		f.store.StartRound(t.Context(), c, rd.Turns(), rd, func(_ []byte, cancel bool, err error) { results[i] <- outcome{cancel, err} })
	}
	f.run(t)

	require.ErrorIs(t, (<-results[0]).err, tasks.ErrFenced, "the run that lost its task writes nothing")
	require.Equal(t, outcome{}, <-results[1])
	require.Equal(t, outcome{cancel: true}, <-results[2], "each run learns of its own task's cancellation")
	for id, want := range map[string]int{current.TaskID: 20, other.TaskID: 30} {
		var score int
		require.NoError(t, f.pool.QueryRow(t.Context(), `SELECT score FROM convergence_rounds WHERE task_id = $1`, id).Scan(&score))
		require.Equal(t, want, score, id)
		_, turns := f.rows(t, id)
		require.Equal(t, 2, turns, id)
	}
}

func TestWriter_DatabaseStopsAnswering_BatchFailsAfterItsTimeout(t *testing.T) {
	t.Parallel()
	f := newWriterFixture(t)
	tasks.SetBatchTimeout(f.w, 200*time.Millisecond)
	c := f.claimed(t)
	f.run(t)

	// Another session holds the task's row, as a database stuck on it would: the round's
	// fence waits for it.
	blocker, err := f.pool.Begin(t.Context())
	require.NoError(t, err)
	_, err = blocker.Exec(t.Context(), `SELECT 1 FROM convergence_tasks WHERE id = $1 FOR UPDATE`, c.TaskID)
	require.NoError(t, err)
	rd := round(1, 40)
	_, _, err = f.store.SaveRound(t.Context(), c, rd.Turns(), rd)
	require.ErrorIs(t, err, context.DeadlineExceeded, "the write fails instead of waiting for ever")
	require.NoError(t, blocker.Rollback(t.Context()))

	// The batch's statement may still run on the server once the row is free: a batch that
	// timed out is not known to have rolled back. Locking the row waits for its end; then the
	// round is there with its turns, or neither is, and the next claim resumes from what is.
	require.NoError(t, pgx.BeginFunc(t.Context(), f.pool, func(tx pgx.Tx) error {
		_, err := tx.Exec(t.Context(), `SELECT 1 FROM convergence_tasks WHERE id = $1 FOR UPDATE`, c.TaskID)
		return err
	}))
	rounds, turns := f.rows(t, c.TaskID)
	require.Contains(t, [][2]int{{0, 0}, {1, 2}}, [2]int{rounds, turns}, "all of the round or nothing")

	rd2 := round(2, 60)
	_, _, err = f.store.SaveRound(t.Context(), c, rd2.Turns(), rd2)
	require.NoError(t, err, "the writer goes on once the database answers")
}

func TestWriter_WriteAfterStop_FailsInsteadOfHanging(t *testing.T) {
	t.Parallel()
	f := newWriterFixture(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	require.NoError(t, f.w.Run(ctx))
	_, id := newTask(t, f.pool, outbox.New(f.pool))
	_, err := f.store.Claim(t.Context(), events.ConvergeRequest{TaskID: id}, "")
	require.ErrorContains(t, err, "task writer stopped")
}
