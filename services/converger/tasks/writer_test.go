package tasks_test

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
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

func TestWriter_StartRound_ReturnsAtOnceAndReportsOnceCommitted(t *testing.T) {
	t.Parallel()
	pool := pgtest.NewFor(t, pgrole.Converger)
	ob := outbox.New(pool)
	w := tasks.NewWriter(pool, 8, 1)
	store := tasks.NewStore(pool, webhook.NewSecrets(seal.Generate())).GroupCommit(w)
	_, id := newTask(t, pool, ob)
	claim, err := tasks.NewStore(pool, webhook.NewSecrets(seal.Generate())).Claim(t.Context(), events.ConvergeRequest{TaskID: id}, "")
	require.NoError(t, err)
	rd := engine.Round{Number: 1, A: engine.Turn{Agent: engine.AgentA, Round: 1, Valid: true, Attempts: 1},
		B: engine.Turn{Agent: engine.AgentB, Round: 1, Valid: true, Attempts: 1}, Score: engine.Score{Value: 40}}
	type outcome struct {
		view []byte
		err  error
	}
	saved := make(chan outcome, 1)
	// The writer is not running yet: the write can only be queued, and StartRound returns.
	store.StartRound(t.Context(), claim, rd.Turns(), rd, func(view []byte, _ bool, err error) { saved <- outcome{view, err} })
	rounds := func() (n int) {
		require.NoError(t, pool.QueryRow(t.Context(), `SELECT count(*) FROM convergence_rounds WHERE task_id = $1`, id).Scan(&n))
		return n
	}
	require.Zero(t, rounds())
	require.Empty(t, saved)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	got := <-saved
	require.NoError(t, got.err)
	require.Equal(t, 1, rounds(), "reported once committed")
	require.JSONEq(t, string(mustJSON(t, tasks.RoundViewOf(id, rd))), string(got.view), "the view stored is the one handed back to stream")
	cancel()
	require.NoError(t, <-done)
}

func TestWriter_WritesQueuedWhenItStops_FailInsteadOfHanging(t *testing.T) {
	t.Parallel()
	pool := pgtest.NewFor(t, pgrole.Converger)
	ob := outbox.New(pool)
	w := tasks.NewWriter(pool, 8, 1)
	store := tasks.NewStore(pool, webhook.NewSecrets(seal.Generate())).GroupCommit(w)
	_, id := newTask(t, pool, ob)
	claim, err := tasks.NewStore(pool, webhook.NewSecrets(seal.Generate())).Claim(t.Context(), events.ConvergeRequest{TaskID: id}, "")
	require.NoError(t, err)
	saved := make(chan error, 1)
	store.StartRound(t.Context(), claim, nil, engine.Round{Number: 1}, func(_ []byte, _ bool, err error) { saved <- err })
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	require.NoError(t, w.Run(ctx))
	require.ErrorContains(t, <-saved, "task writer stopped")
	var n int
	require.NoError(t, pool.QueryRow(t.Context(), `SELECT count(*) FROM convergence_rounds WHERE task_id = $1`, id).Scan(&n))
	require.Zero(t, n)
}

func TestWriter_RoundsOfOneBatch_OneStatementThatFencesEachRun(t *testing.T) {
	t.Parallel()
	pool := pgtest.NewFor(t, pgrole.Converger)
	ob := outbox.New(pool)
	direct := tasks.NewStore(pool, webhook.NewSecrets(seal.Generate()))
	w := tasks.NewWriter(pool, 8, 1)
	store := direct.GroupCommit(w)
	_, taken := newTask(t, pool, ob)
	stale, err := direct.Claim(t.Context(), events.ConvergeRequest{TaskID: taken}, "")
	require.NoError(t, err)
	current, err := direct.Claim(t.Context(), events.ConvergeRequest{TaskID: taken}, "")
	require.NoError(t, err)
	_, other := newTask(t, pool, ob)
	otherClaim, err := direct.Claim(t.Context(), events.ConvergeRequest{TaskID: other}, "")
	require.NoError(t, err)
	_, err = pool.Exec(t.Context(), `UPDATE convergence_tasks SET cancel_requested_at = now() WHERE id = $1`, other)
	require.NoError(t, err)

	round := func(score int) engine.Round {
		return engine.Round{Number: 1, A: engine.Turn{Agent: engine.AgentA, Round: 1, Valid: true, Attempts: 1},
			B: engine.Turn{Agent: engine.AgentB, Round: 1, Valid: true, Attempts: 1}, Score: engine.Score{Value: score}}
	}
	type outcome struct {
		cancel bool
		err    error
	}
	results := make([]chan outcome, 3)
	// Queued before the writer runs, so the three share its first batch.
	for i, c := range []tasks.Claim{stale, current, otherClaim} {
		results[i] = make(chan outcome, 1)
		rd := round(10 * (i + 1))
		store.StartRound(t.Context(), c, rd.Turns(), rd, func(_ []byte, cancel bool, err error) { results[i] <- outcome{cancel, err} })
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	defer func() {
		cancel()
		require.NoError(t, <-done)
	}()

	require.ErrorIs(t, (<-results[0]).err, tasks.ErrFenced, "the run that lost its task writes nothing")
	require.Equal(t, outcome{}, <-results[1])
	require.Equal(t, outcome{cancel: true}, <-results[2], "each run learns of its own task's cancellation")
	for id, want := range map[string]int{taken: 20, other: 30} {
		var score, turns int
		require.NoError(t, pool.QueryRow(t.Context(), `SELECT r.score, (SELECT count(*) FROM convergence_turns WHERE task_id = $1)
			FROM convergence_rounds r WHERE r.task_id = $1`, id).Scan(&score, &turns))
		require.Equal(t, want, score, id)
		require.Equal(t, 2, turns, id)
	}
}

func TestWriter_DatabaseStopsAnswering_BatchFailsAfterItsTimeout(t *testing.T) {
	t.Parallel()
	pool := pgtest.NewFor(t, pgrole.Converger)
	ob := outbox.New(pool)
	direct := tasks.NewStore(pool, webhook.NewSecrets(seal.Generate()))
	w := tasks.NewWriter(pool, 8, 1)
	tasks.SetBatchTimeout(w, 200*time.Millisecond)
	store := direct.GroupCommit(w)
	_, id := newTask(t, pool, ob)
	claim, err := direct.Claim(t.Context(), events.ConvergeRequest{TaskID: id}, "")
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	defer func() {
		cancel()
		require.NoError(t, <-done)
	}()

	// Another session holds the task's row, as a database stuck on it would: the round's
	// fence waits for it.
	blocker, err := pool.Begin(t.Context())
	require.NoError(t, err)
	_, err = blocker.Exec(t.Context(), `SELECT 1 FROM convergence_tasks WHERE id = $1 FOR UPDATE`, id)
	require.NoError(t, err)
	rd := engine.Round{Number: 1, A: engine.Turn{Agent: engine.AgentA, Round: 1, Valid: true, Attempts: 1},
		B: engine.Turn{Agent: engine.AgentB, Round: 1, Valid: true, Attempts: 1}}
	_, _, err = store.SaveRound(t.Context(), claim, rd.Turns(), rd)
	require.ErrorIs(t, err, context.DeadlineExceeded, "the write fails instead of waiting for ever")
	require.NoError(t, blocker.Rollback(t.Context()))

	// The batch's statement may still run on the server once the row is free: a batch that
	// timed out is not known to have rolled back. Locking the row waits for its end; then the
	// round is there with its turns, or neither is, and the next claim resumes from what is.
	require.NoError(t, pgx.BeginFunc(t.Context(), pool, func(tx pgx.Tx) error {
		_, err := tx.Exec(t.Context(), `SELECT 1 FROM convergence_tasks WHERE id = $1 FOR UPDATE`, id)
		return err
	}))
	var rounds, turns int
	require.NoError(t, pool.QueryRow(t.Context(), `SELECT (SELECT count(*) FROM convergence_rounds WHERE task_id = $1),
		(SELECT count(*) FROM convergence_turns WHERE task_id = $1)`, id).Scan(&rounds, &turns))
	require.Contains(t, [][2]int{{0, 0}, {1, 2}}, [2]int{rounds, turns}, "all of the round or nothing")

	rd2 := engine.Round{Number: 2, A: engine.Turn{Agent: engine.AgentA, Round: 2, Valid: true, Attempts: 1},
		B: engine.Turn{Agent: engine.AgentB, Round: 2, Valid: true, Attempts: 1}}
	_, _, err = store.SaveRound(t.Context(), claim, rd2.Turns(), rd2)
	require.NoError(t, err, "the writer goes on once the database answers")
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	require.NoError(t, err)
	return b
}

func TestWriter_WriteAfterStop_FailsInsteadOfHanging(t *testing.T) {
	t.Parallel()
	pool := pgtest.NewFor(t, pgrole.Converger)
	ob := outbox.New(pool)
	w := tasks.NewWriter(pool, 8, 1)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	require.NoError(t, w.Run(ctx))
	store := tasks.NewStore(pool, webhook.NewSecrets(seal.Generate())).GroupCommit(w)
	_, id := newTask(t, pool, ob)
	_, err := store.Claim(t.Context(), events.ConvergeRequest{TaskID: id}, "")
	require.ErrorContains(t, err, "task writer stopped")
}
