package api_test

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/convergence-dev/convergence/internal/outbox"
	contract "github.com/convergence-dev/convergence/pkg/api"
	"github.com/convergence-dev/convergence/pkg/events"
	"github.com/convergence-dev/convergence/services/converger/engine"
	"github.com/convergence-dev/convergence/services/converger/llm"
	"github.com/convergence-dev/convergence/services/converger/tasks"
	"github.com/convergence-dev/convergence/services/converger/webhook"
)

// These tests play the converger's runs through the task store and publish no progress at all,
// as if every core-NATS message were lost: the API must still stream and answer from the
// record, which a converger that runs no task answers for (ServeQueries).

func TestConverge_ProgressMessagesLost_StreamAndSyncWaitFollowTheRecord(t *testing.T) {
	t.Parallel()
	c := newAPIEnv(t, 0)
	c.goRun(c.converger(t).ServeQueries)
	envID, key := c.insertTenant("acme", "running")
	store := tasks.NewStore(c.convPool, webhook.NewSecrets(c.secrets))

	a := c.call(t, http.MethodPost, "/api/v1/converge", key, map[string]any{"prompt": "Quiet one.", "async": true})
	require.Equal(t, http.StatusAccepted, a.Status)
	id := a.task(t).TaskID
	stream := c.openEvents(t, key, id, nil)

	require.NoError(t, store.Accept(t.Context(), events.ConvergeRequest{TaskID: id, EnvID: envID, OrgID: 1, Type: "custom",
		Prompt: "Quiet one.", AgentARole: "A", AgentBRole: "B", MaxRounds: 4}, ""))
	claim, err := store.Claim(t.Context(), events.ConvergeRequest{TaskID: id}, "")
	require.NoError(t, err)
	var rounds []engine.Round
	for n := 1; n <= 2; n++ {
		rd := engine.Round{Number: n,
			A:     engine.Turn{Agent: engine.AgentA, Round: n, Valid: true, Attempts: 1, Reply: engine.Reply{Proposal: "a", Agreement: 40 * n}, Usage: llm.Usage{InputTokens: 100, OutputTokens: 10}},
			B:     engine.Turn{Agent: engine.AgentB, Round: n, Valid: true, Attempts: 1, Reply: engine.Reply{Proposal: "b", Agreement: 40 * n}, Usage: llm.Usage{InputTokens: 200, OutputTokens: 20}},
			Score: engine.Score{Value: 30 * n, MethodVersion: engine.MethodVersion}}
		_, _, err = store.SaveRound(t.Context(), claim, rd.Turns(), rd)
		require.NoError(t, err)
		rounds = append(rounds, rd)
	}
	res := engine.Result{Status: engine.StatusNotConverged, StopReason: engine.StopMaxRounds, Rounds: rounds, Score: rounds[1].Score,
		Provider: "simulated", Model: "m", Usage: engine.Usage{A: llm.Usage{InputTokens: 200, OutputTokens: 20}, B: llm.Usage{InputTokens: 400, OutputTokens: 40}, Total: llm.Usage{InputTokens: 600, OutputTokens: 60}}}
	require.NoError(t, store.Finish(t.Context(), outbox.New(c.convPool), claim, tasks.Outcome{Status: tasks.StatusCompleted, Result: tasks.ResultOf(res, "")}))

	got := collect(t, stream, 10*time.Second)
	require.Len(t, got, 3)
	require.Equal(t, []string{"round", "round", "result"}, []string{got[0].Event, got[1].Event, got[2].Event})
	require.Equal(t, []string{"1", "2"}, []string{got[0].ID, got[1].ID})
	var v contract.Task
	require.NoError(t, json.Unmarshal(got[2].Data, &v))
	require.EqualValues(t, "max_rounds", v.Result.StopReason)
	require.Equal(t, int64(660), v.Usage.TotalTokens)

	// A sync request whose task finishes without a word on core NATS is answered too.
	done := make(chan answer, 1)
	go func() {
		a, err := tryCall(c.URL, http.MethodPost, "/api/v1/converge", key, map[string]any{"prompt": "Another quiet one."}, nil)
		if err != nil {
			t.Error(err)
		}
		done <- a
	}()
	var second events.ConvergeRequest
	require.Eventually(t, func() bool {
		return c.Pool.QueryRow(t.Context(), `SELECT request FROM api.tasks WHERE id <> $1`, id).Scan(&second) == nil
	}, 10*time.Second, 10*time.Millisecond)
	require.NoError(t, store.Accept(t.Context(), second, ""))
	claim, err = store.Claim(t.Context(), events.ConvergeRequest{TaskID: second.TaskID}, "")
	require.NoError(t, err)
	require.NoError(t, store.Finish(t.Context(), outbox.New(c.convPool), claim, tasks.Outcome{Status: tasks.StatusCompleted, Result: tasks.ResultOf(engine.Result{StopReason: engine.StopBudgetExhausted}, "")}))
	select {
	case a := <-done:
		require.Equal(t, http.StatusOK, a.Status, "%s", a.Raw)
	case <-time.After(10 * time.Second):
		t.Fatal("the sync request did not notice that its task had finished")
	}
}

func TestConverge_CancelQueuedTask_CancelledAtOnceWithoutARun(t *testing.T) {
	t.Parallel()
	c := newAPIEnv(t, 0)
	c.goRun(c.converger(t).ServeQueries)
	_, key := c.insertTenant("acme", "running")
	a := c.call(t, http.MethodPost, "/api/v1/converge", key, map[string]any{"prompt": "Never mind.", "async": true})
	require.Equal(t, http.StatusAccepted, a.Status)
	id := a.task(t).TaskID
	stream := c.openEvents(t, key, id, nil)

	d := c.call(t, http.MethodDelete, "/api/v1/converge/"+id, key, nil)
	require.Equal(t, http.StatusOK, d.Status, "%s", d.Raw)
	v := d.task(t)
	require.Equal(t, contract.TaskStatusCancelled, v.Status)
	require.EqualValues(t, "cancelled", v.Result.StopReason)
	require.Zero(t, v.Usage.TotalTokens)
	got := collect(t, stream, 5*time.Second)
	require.Len(t, got, 1)
	require.Equal(t, "result", got[0].Event)
}
