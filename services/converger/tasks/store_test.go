package tasks_test

import (
	"context"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/convergence-dev/convergence/internal/outbox"
	"github.com/convergence-dev/convergence/internal/pgrole"
	"github.com/convergence-dev/convergence/internal/pgtest"
	"github.com/convergence-dev/convergence/internal/seal"
	"github.com/convergence-dev/convergence/internal/taskspec"
	"github.com/convergence-dev/convergence/pkg/api"
	"github.com/convergence-dev/convergence/pkg/events"
	"github.com/convergence-dev/convergence/services/converger/engine"
	"github.com/convergence-dev/convergence/services/converger/llm"
	"github.com/convergence-dev/convergence/services/converger/tasks"
	"github.com/convergence-dev/convergence/services/converger/webhook"
)

func TestNewID_ValidUniqueAndInCreationOrder(t *testing.T) {
	t.Parallel()
	ids := make([]string, 1000)
	for i := range ids {
		ids[i] = taskspec.NewID()
		require.True(t, taskspec.ValidID(ids[i]), ids[i])
	}
	require.LessOrEqual(t, ids[0][:16], ids[len(ids)-1][:16], "the time part never goes back")
	require.Len(t, slices.Compact(slices.Sorted(slices.Values(ids))), len(ids))
	for _, bad := range []string{"", "tsk_", "tsk_01a2.*>", "task_0123456789abcdef0123456789ab", ids[0] + "0", "TSK_" + ids[0][4:]} {
		require.False(t, taskspec.ValidID(bad), bad)
	}
}

func TestAgentsOf_UsagePerAgent_TurnCutShortAfterABilledReplyIsOneCall(t *testing.T) {
	t.Parallel()
	u := func(in, out int64) llm.Usage { return llm.Usage{InputTokens: in, OutputTokens: out} }
	turn := func(a engine.Agent, attempts int, usage llm.Usage) engine.Turn {
		return engine.Turn{Agent: a, Attempts: attempts, Usage: usage, Model: "m-1"}
	}
	res := engine.Result{
		Provider: "openai", Model: "m-1",
		Rounds: []engine.Round{{A: turn(engine.AgentA, 1, u(100, 10)), B: turn(engine.AgentB, 2, u(200, 20))}},
		// A's round-two turn got a billed reply that did not parse, then the task was cancelled.
		Usage: engine.Usage{A: u(150, 15), B: u(200, 20), Total: u(350, 35)},
	}
	got := tasks.AgentsOf(res)
	require.Equal(t, []api.AgentUsage{
		{Agent: "A", Provider: "openai", Model: "m-1", Calls: 2, InputTokens: 150, OutputTokens: 15, TotalTokens: 165},
		{Agent: "B", Provider: "openai", Model: "m-1", Calls: 2, InputTokens: 200, OutputTokens: 20, TotalTokens: 220},
	}, got, "no synthesis line: it made no call")
}

// newTask records a task as a converge.request's arrival does, for a tenant of its own.
func newTask(t *testing.T, pool *pgxpool.Pool, _ *outbox.Outbox) (int64, string) {
	t.Helper()
	envID, id := rand.Int64N(1<<40)+1, taskspec.NewID()
	req := events.ConvergeRequest{TaskID: id, EnvID: envID, OrgID: 1, Prompt: "p", Type: "custom", MaxRounds: 4}
	require.NoError(t, tasks.NewStore(pool, webhook.NewSecrets(seal.Generate())).Accept(t.Context(), req, ""))
	return envID, id
}

func resultEvents(t *testing.T, pool *pgxpool.Pool) int {
	t.Helper()
	var n int
	require.NoError(t, pool.QueryRow(t.Context(), `
		SELECT count(*) FROM outbox WHERE subject IN ($1, $2)`, events.SubjectConvergeCompleted, events.SubjectConvergeFailed).Scan(&n))
	return n
}

func TestStore_LaterClaim_FencesTheEarlierRun(t *testing.T) {
	t.Parallel()
	pool := pgtest.NewFor(t, pgrole.Converger)
	ob := outbox.New(pool)
	store := tasks.NewStore(pool, webhook.NewSecrets(seal.Generate()))
	envID, id := newTask(t, pool, ob)
	ctx := context.Background()

	first, err := store.Claim(ctx, events.ConvergeRequest{TaskID: id}, "")
	require.NoError(t, err)
	a1 := engine.Turn{Agent: engine.AgentA, Round: 1, Valid: true, Attempts: 1, Usage: llm.Usage{InputTokens: 10, OutputTokens: 5}}
	require.NoError(t, store.SaveTurns(ctx, first, a1))

	second, err := store.Claim(ctx, events.ConvergeRequest{TaskID: id}, "") // The request was redelivered to another converger.
	require.NoError(t, err)
	require.Equal(t, first.Run+1, second.Run)
	require.Equal(t, first.StartedAt, second.StartedAt, "the timeout keeps counting from the first start")
	require.Len(t, second.Turns, 1, "it resumes from the first run's turn")
	require.Equal(t, a1.Usage, second.Turns[0].Usage)

	b1 := engine.Turn{Agent: engine.AgentB, Round: 1, Valid: true, Attempts: 1, Usage: llm.Usage{InputTokens: 20, OutputTokens: 6}}
	rd := engine.Round{Number: 1, A: a1, B: b1, Score: engine.Score{Value: 50}}
	synthesis := engine.Turn{Agent: engine.AgentSynthesis, Round: 1, Valid: true, Attempts: 1, Usage: llm.Usage{InputTokens: 30, OutputTokens: 7}}
	require.ErrorIs(t, store.SaveTurns(ctx, first, a1), tasks.ErrFenced)
	_, _, err = store.SaveRound(ctx, first, []engine.Turn{b1}, rd)
	require.ErrorIs(t, err, tasks.ErrFenced)
	done := tasks.Outcome{Status: tasks.StatusCompleted, Result: api.Result{StopReason: "converged", Rounds: 1, Disputed: []string{}}}
	require.ErrorIs(t, store.Finish(ctx, ob, first, done, synthesis), tasks.ErrFenced)
	require.Zero(t, resultEvents(t, pool), "a fenced run writes no result event")
	require.Equal(t, 1, turnCount(t, pool, id), "a fenced run writes no turn")

	_, _, err = store.SaveRound(ctx, second, []engine.Turn{b1}, rd)
	require.NoError(t, err)
	require.NoError(t, store.Finish(ctx, ob, second, done, synthesis))
	require.Equal(t, 1, resultEvents(t, pool))
	require.Equal(t, 3, turnCount(t, pool, id), "the round saves its B turn and the finish the synthesis")
	_, err = store.Claim(ctx, events.ConvergeRequest{TaskID: id}, "")
	require.ErrorIs(t, err, tasks.ErrNotClaimable, "a finished task is not claimed again")

	rec, err := store.Get(ctx, envID, id)
	require.NoError(t, err)
	require.Equal(t, tasks.StatusCompleted, rec.Status)
	require.Equal(t, 1, rec.Rounds)
	_, err = store.Get(ctx, envID+1, id)
	require.ErrorIs(t, err, tasks.ErrNotFound, "another tenant's task is not found")
}

func turnCount(t *testing.T, pool *pgxpool.Pool, taskID string) int {
	t.Helper()
	var n int
	require.NoError(t, pool.QueryRow(t.Context(), `SELECT count(*) FROM convergence_turns WHERE task_id = $1`, taskID).Scan(&n))
	return n
}
