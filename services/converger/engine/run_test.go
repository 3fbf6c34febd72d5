package engine_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/convergence-dev/convergence/services/converger/engine"
	"github.com/convergence-dev/convergence/services/converger/llm"
	"github.com/convergence-dev/convergence/services/converger/llm/simulated"
)

func task(marker string) engine.Task {
	return engine.Task{ID: "t-1", Prompt: "Design a rate limiter for a multi-tenant API. " + marker, Type: engine.TypeDesign}
}

func TestRun_ConvergingAgents_ConvergedWithSynthesis(t *testing.T) {
	t.Parallel()
	rec := &recorder{next: simulated.New(simulated.Config{})}
	res, err := newEngine(t, rec).Run(t.Context(), task("[sim:converge]"), engine.Options{})
	require.NoError(t, err)

	require.Equal(t, engine.StopConverged, res.StopReason)
	require.Equal(t, engine.StatusConverged, res.Status)
	require.Len(t, res.Rounds, 3)
	require.GreaterOrEqual(t, res.Score.Value, 80)
	require.True(t, res.Synthesized)
	require.NotNil(t, res.Synthesis)
	require.Equal(t, res.Synthesis.Output, res.Output)
	require.True(t, strings.HasPrefix(res.Output, "Final answer."))
	require.Equal(t, 7, rec.calls(), "three rounds of two turns and one synthesis")
	require.Equal(t, "simulated", res.Provider)
	require.Equal(t, "simulated-1", res.Model)
	requireResultConsistent(t, res)

	// Scores rise as the agents converge.
	for i := 1; i < len(res.Rounds); i++ {
		require.Greater(t, res.Rounds[i].Score.Value, res.Rounds[i-1].Score.Value)
	}
	// Every billed token is in the result exactly once.
	var sum llm.Usage
	for _, rd := range res.Rounds {
		sum = sum.Add(rd.A.Usage).Add(rd.B.Usage)
	}
	require.Equal(t, sum.Add(res.Synthesis.Usage), res.Usage.Total)
	require.Positive(t, res.Usage.A.InputTokens)
	require.Positive(t, res.Usage.B.OutputTokens)
}

func TestRun_FrozenPositions_Stalemate(t *testing.T) {
	t.Parallel()
	tk := task("[sim:stalemate]")
	tk.MaxRounds = 8
	res, err := newEngine(t, simulated.New(simulated.Config{})).Run(t.Context(), tk, engine.Options{})
	require.NoError(t, err)

	require.Equal(t, engine.StopStalemate, res.StopReason)
	require.Equal(t, engine.StatusNotConverged, res.Status)
	require.Len(t, res.Rounds, 3, "the score stops moving in round three, well before max rounds")
	require.Equal(t, res.Rounds[1].Score.Value, res.Rounds[2].Score.Value)
	require.False(t, res.Synthesized)
	require.Nil(t, res.Synthesis)
	require.NotEmpty(t, res.Disputed)
	require.Contains(t, res.Output, "Not converged")
	require.Contains(t, res.Output, "stalemate")
	for _, d := range res.Disputed {
		require.Contains(t, res.Output, d)
	}
	requireResultConsistent(t, res)
}

func TestRun_AgentsNeverAgree_MaxRounds(t *testing.T) {
	t.Parallel()
	tk := task("[sim:never]")
	tk.MaxRounds = 5
	rec := &recorder{next: simulated.New(simulated.Config{})}
	res, err := newEngine(t, rec).Run(t.Context(), tk, engine.Options{})
	require.NoError(t, err)

	require.Equal(t, engine.StopMaxRounds, res.StopReason)
	require.Equal(t, engine.StatusNotConverged, res.Status)
	require.Len(t, res.Rounds, 5)
	require.Equal(t, 10, rec.calls(), "no synthesis when the agents did not converge")
	require.Len(t, res.Disputed, 6, "three open issues from each agent")
	require.Contains(t, res.Output, "Agent A (Solution Architect) proposes:")
	require.Contains(t, res.Output, "Agent B (Security and Reliability Reviewer) proposes:")
	require.Contains(t, res.Output, "Still in dispute:")
	requireResultConsistent(t, res)
}

func TestRun_DefaultMaxRounds_Four(t *testing.T) {
	t.Parallel()
	res, err := newEngine(t, simulated.New(simulated.Config{})).Run(t.Context(), task("[sim:never]"), engine.Options{})
	require.NoError(t, err)
	require.Equal(t, engine.StopMaxRounds, res.StopReason)
	require.Len(t, res.Rounds, 4)
}

func TestRun_TokenBudget_StopsBeforeTheCallThatWouldExceedIt(t *testing.T) {
	t.Parallel()
	// Measure the run without a budget, then give a budget that covers round one and a bit.
	free, err := newEngine(t, simulated.New(simulated.Config{})).Run(t.Context(), task("[sim:converge]"), engine.Options{})
	require.NoError(t, err)
	roundOne := free.Rounds[0].A.Usage.Total() + free.Rounds[0].B.Usage.Total()

	tk := task("[sim:converge]")
	tk.TokenBudget = roundOne + 2000 // Less than the next call's input plus its 1500-token output cap.
	rec := &recorder{next: simulated.New(simulated.Config{})}
	res, err := newEngine(t, rec).Run(t.Context(), tk, engine.Options{})
	require.NoError(t, err)

	require.Equal(t, engine.StopBudgetExhausted, res.StopReason)
	require.Equal(t, engine.StatusNotConverged, res.Status)
	require.Len(t, res.Rounds, 1)
	require.Equal(t, 2, rec.calls(), "the third call is refused before it is made")
	require.LessOrEqual(t, res.Usage.Total.Total(), tk.TokenBudget)
	require.Equal(t, roundOne, res.Usage.Total.Total())
	require.Contains(t, res.Output, "token budget")
	requireResultConsistent(t, res)
}

func TestRun_BudgetBelowFirstCall_NoCallMade(t *testing.T) {
	t.Parallel()
	tk := task("[sim:converge]")
	tk.TokenBudget = 500
	rec := &recorder{next: simulated.New(simulated.Config{})}
	res, err := newEngine(t, rec).Run(t.Context(), tk, engine.Options{})
	require.NoError(t, err)
	require.Equal(t, engine.StopBudgetExhausted, res.StopReason)
	require.Zero(t, rec.calls())
	require.Empty(t, res.Rounds)
	require.Zero(t, res.Usage.Total.Total())
	require.Zero(t, res.Score.Value)
	require.Contains(t, res.Output, "before the first round completed")
	requireResultConsistent(t, res)
}

func TestRun_CallerCancels_Cancelled(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	rec := &recorder{next: simulated.New(simulated.Config{})}
	turns := 0
	res, err := newEngine(t, rec).Run(ctx, task("[sim:never]"), engine.Options{
		OnTurn: func(context.Context, engine.Turn) error {
			if turns++; turns == 3 {
				cancel() // The caller gives up after round two's first turn.
			}
			return nil
		},
	})
	require.NoError(t, err)
	require.Equal(t, engine.StopCancelled, res.StopReason)
	require.Equal(t, engine.StatusNotConverged, res.Status)
	require.Len(t, res.Rounds, 1)
	require.Equal(t, 3, rec.calls())
	require.Equal(t, rec.calls(), turns)
	require.Contains(t, res.Output, "cancelled")
	requireResultConsistent(t, res)
}

func TestRun_CancelledDuringACall_ReturnsPromptly(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(t.Context())
	time.AfterFunc(30*time.Millisecond, cancel)
	start := time.Now()
	res, err := newEngine(t, simulated.New(simulated.Config{Latency: time.Hour})).Run(ctx, task(""), engine.Options{})
	require.NoError(t, err)
	require.Equal(t, engine.StopCancelled, res.StopReason)
	require.Less(t, time.Since(start), 5*time.Second)
	requireResultConsistent(t, res)
}

func TestRun_TaskTimeout_Timeout(t *testing.T) {
	t.Parallel()
	tk := task("[sim:converge]")
	tk.Timeout = 100 * time.Millisecond
	start := time.Now()
	res, err := newEngine(t, simulated.New(simulated.Config{Latency: 40 * time.Millisecond})).Run(t.Context(), tk, engine.Options{})
	require.NoError(t, err)

	require.Equal(t, engine.StopTimeout, res.StopReason)
	require.Equal(t, engine.StatusNotConverged, res.Status)
	require.Less(t, time.Since(start), 2*time.Second)
	require.Len(t, res.Rounds, 1, "two 40ms turns fit in 100ms, the third is cut off")
	require.Contains(t, res.Output, "ran out of time")
	requireResultConsistent(t, res)
}

func TestRun_CallerDeadline_Timeout(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	res, err := newEngine(t, simulated.New(simulated.Config{Latency: time.Hour})).Run(ctx, task(""), engine.Options{})
	require.NoError(t, err)
	require.Equal(t, engine.StopTimeout, res.StopReason)
}

// rubberStamp agrees fully with everything, never raises an issue, and ignores instructions.
type rubberStamp struct{}

func (rubberStamp) Name() string { return "rubber-stamp" }

func (rubberStamp) Complete(_ context.Context, req llm.Request) (llm.Response, error) {
	content := `{"proposal":"Use a token bucket per tenant stored in Redis.","agreement":100,"open_issues":[],"concessions":[],"confidence":95}`
	if req.Schema.Name == "convergence_synthesis" {
		content = `{"output":"Use a token bucket per tenant stored in Redis."}`
	}
	return llm.Response{Content: content, Model: "stamp", Usage: llm.Usage{InputTokens: 10, OutputTokens: 10}, Attempts: 1}, nil
}

func TestRun_EmptyAgreementInRoundOne_ForcesCritiqueRound(t *testing.T) {
	t.Parallel()
	rec := &recorder{next: rubberStamp{}}
	res, err := newEngine(t, rec).Run(t.Context(), task(""), engine.Options{})
	require.NoError(t, err)

	require.Equal(t, engine.StopConverged, res.StopReason)
	require.Len(t, res.Rounds, 3, "round two is a critique round and cannot converge, even at score 100")
	require.False(t, res.Rounds[0].Critique)
	require.True(t, res.Rounds[1].Critique)
	require.Equal(t, 100, res.Rounds[1].Score.Value)
	require.False(t, res.Rounds[2].Critique)

	reqs := rec.requests()
	require.Len(t, reqs, 7)
	for i, req := range reqs {
		last := req.Messages[len(req.Messages)-1].Content
		require.Equal(t, i == 2 || i == 3, strings.Contains(last, "Critique round"), "request %d", i)
	}
	requireResultConsistent(t, res)
}

func TestRun_EmptyAgreementWithSimulatedAgents_CritiqueRaisesIssues(t *testing.T) {
	t.Parallel()
	res, err := newEngine(t, simulated.New(simulated.Config{})).Run(t.Context(), task("[sim:flat]"), engine.Options{})
	require.NoError(t, err)
	require.Equal(t, engine.StopConverged, res.StopReason)
	require.True(t, res.Rounds[1].Critique)
	require.NotEmpty(t, res.Rounds[1].B.Reply.OpenIssues, "the critique round surfaced an issue")
	require.Len(t, res.Rounds, 3)
	requireResultConsistent(t, res)
}

func TestRun_OneRoundOfAgreement_NeverConvergesBeforeRoundTwo(t *testing.T) {
	t.Parallel()
	// Round one can score high (agreement and overlap), but MinRounds holds it back.
	res, err := newEngine(t, rubberStamp{}).Run(t.Context(), task(""), engine.Options{})
	require.NoError(t, err)
	require.GreaterOrEqual(t, len(res.Rounds), engine.MinRounds)
}

func TestRun_UnparseableReply_RetriedOnceWithTheParseError(t *testing.T) {
	t.Parallel()
	rec := &recorder{next: simulated.New(simulated.Config{})}
	res, err := newEngine(t, rec).Run(t.Context(), task("[sim:converge,garbage]"), engine.Options{})
	require.NoError(t, err)

	require.Equal(t, engine.StopConverged, res.StopReason)
	require.Len(t, res.Rounds, 3)
	require.Equal(t, 13, rec.calls(), "every turn took two attempts, the synthesis one")
	for _, rd := range res.Rounds {
		for _, turn := range rd.Turns() {
			require.True(t, turn.Valid)
			require.Equal(t, 2, turn.Attempts)
		}
	}
	reqs := rec.requests()
	require.NotContains(t, reqs[0].Messages[0].Content, "could not be parsed")
	require.Contains(t, reqs[1].Messages[0].Content, `could not be parsed: the reply has no "proposal"`)

	// The failed attempts were billed, so they are counted.
	first := res.Rounds[0].A
	resp, err := simulated.New(simulated.Config{}).Complete(t.Context(), reqs[1])
	require.NoError(t, err)
	require.Greater(t, first.Usage.Total(), resp.Usage.Total())
	requireResultConsistent(t, res)
}

func TestRun_RepliesNeverParse_NeverCountAsAgreement(t *testing.T) {
	t.Parallel()
	rec := &recorder{next: simulated.New(simulated.Config{})}
	res, err := newEngine(t, rec).Run(t.Context(), task("[sim:converge,garbage-always]"), engine.Options{})
	require.NoError(t, err)

	require.NotEqual(t, engine.StopConverged, res.StopReason)
	require.Equal(t, 2*2*len(res.Rounds), rec.calls(), "each turn retried exactly once")
	for _, rd := range res.Rounds {
		require.False(t, rd.A.Valid)
		require.False(t, rd.B.Valid)
		require.Zero(t, rd.Score.Breakdown.Agreement.Input)
		require.InDelta(t, 2.0, rd.Score.Breakdown.OpenIssues.Input, 0, "an unreadable reply counts as an open issue")
	}
	require.Contains(t, res.Output, "(no readable proposal)")
	requireResultConsistent(t, res)
}

func TestRun_ResumeFromPersistedTurns_NoRepeatedCalls(t *testing.T) {
	t.Parallel()
	var persisted []engine.Turn
	full, err := newEngine(t, simulated.New(simulated.Config{})).Run(t.Context(), task("[sim:converge]"), engine.Options{
		OnTurn: func(_ context.Context, turn engine.Turn) error {
			// Persist the way a service would: as JSON.
			raw, err := json.Marshal(turn)
			if err != nil {
				return err
			}
			var back engine.Turn
			if err := json.Unmarshal(raw, &back); err != nil {
				return err
			}
			persisted = append(persisted, back)
			return nil
		},
	})
	require.NoError(t, err)
	require.Len(t, persisted, 7)

	for _, done := range []int{0, 1, 3, 4, 6, 7} {
		t.Run(fmt.Sprintf("after %d turns", done), func(t *testing.T) {
			t.Parallel()
			rec := &recorder{next: simulated.New(simulated.Config{})}
			var observed []engine.Turn
			res, err := newEngine(t, rec).Run(t.Context(), task("[sim:converge]"), engine.Options{
				Resume: persisted[:done],
				OnTurn: func(_ context.Context, turn engine.Turn) error {
					observed = append(observed, turn)
					return nil
				},
			})
			require.NoError(t, err)
			require.Equal(t, 7-done, rec.calls(), "persisted turns are not asked for again")
			require.Len(t, observed, 7-done, "and not reported again")
			require.Equal(t, full.StopReason, res.StopReason)
			require.Equal(t, full.Score, res.Score)
			require.Equal(t, full.Output, res.Output)
			require.Equal(t, full.Usage, res.Usage, "usage of resumed turns is counted once")
			require.Len(t, res.Rounds, len(full.Rounds))
			for i := range full.Rounds {
				require.Equal(t, full.Rounds[i].Score, res.Rounds[i].Score)
				require.Equal(t, full.Rounds[i].B.Reply, res.Rounds[i].B.Reply)
			}
			requireResultConsistent(t, res)
		})
	}
}

func TestRun_ResumeOutOfOrder_ErrInvalidResume(t *testing.T) {
	t.Parallel()
	var persisted []engine.Turn
	_, err := newEngine(t, simulated.New(simulated.Config{})).Run(t.Context(), task("[sim:converge]"), engine.Options{
		OnTurn: func(_ context.Context, turn engine.Turn) error { persisted = append(persisted, turn); return nil },
	})
	require.NoError(t, err)

	tests := []struct {
		name  string
		turns []engine.Turn
	}{
		{"B before A", []engine.Turn{persisted[1]}},
		{"a round skipped", []engine.Turn{persisted[0], persisted[1], persisted[4]}},
		{"synthesis before convergence", []engine.Turn{persisted[0], persisted[1], persisted[6]}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rec := &recorder{next: simulated.New(simulated.Config{})}
			_, err := newEngine(t, rec).Run(t.Context(), task("[sim:converge]"), engine.Options{Resume: tt.turns})
			require.ErrorIs(t, err, engine.ErrInvalidResume)
			require.Zero(t, rec.calls())
		})
	}
}

func TestRun_ObserversSeeEveryTurnAndRoundInOrder(t *testing.T) {
	t.Parallel()
	var events []string
	res, err := newEngine(t, simulated.New(simulated.Config{})).Run(t.Context(), task("[sim:converge]"), engine.Options{
		OnTurn: func(_ context.Context, turn engine.Turn) error {
			events = append(events, fmt.Sprintf("turn %s%d", turn.Agent, turn.Round))
			return nil
		},
		OnRound: func(_ context.Context, rd engine.Round) error {
			events = append(events, fmt.Sprintf("round %d", rd.Number))
			return nil
		},
	})
	require.NoError(t, err)
	require.Equal(t, []string{
		"turn A1", "turn B1", "round 1", "turn A2", "turn B2", "round 2", "turn A3", "turn B3", "round 3", "turn synthesis3",
	}, events)
	require.Equal(t, engine.StopConverged, res.StopReason)
}

func TestRun_ObserverFails_StopsWithoutFurtherCalls(t *testing.T) {
	t.Parallel()
	rec := &recorder{next: simulated.New(simulated.Config{})}
	dbDown := errors.New("database down")
	res, err := newEngine(t, rec).Run(t.Context(), task("[sim:converge]"), engine.Options{
		OnRound: func(context.Context, engine.Round) error { return dbDown },
	})
	require.ErrorIs(t, err, dbDown)
	require.Equal(t, 2, rec.calls())
	require.Empty(t, res.StopReason)
	require.Positive(t, res.Usage.Total.Total(), "usage spent before the failure is reported")
}

// failing answers its n-th call (from 1) with err.
type failing struct {
	next llm.Provider
	at   int
	err  error
	mu   sync.Mutex
	n    int
}

func (f *failing) Name() string { return f.next.Name() }

func (f *failing) Complete(ctx context.Context, req llm.Request) (llm.Response, error) {
	f.mu.Lock()
	f.n++
	n := f.n
	f.mu.Unlock()
	if n == f.at {
		return llm.Response{}, f.err
	}
	return f.next.Complete(ctx, req)
}

func TestRun_ProviderFailsPermanently_ErrorWithPartialUsage(t *testing.T) {
	t.Parallel()
	p := &failing{next: simulated.New(simulated.Config{}), at: 3, err: &llm.Error{Kind: llm.ErrPermanent, Provider: "simulated", StatusCode: 401}}
	res, err := newEngine(t, p).Run(t.Context(), task("[sim:converge]"), engine.Options{})
	require.ErrorIs(t, err, llm.ErrPermanent)
	require.ErrorContains(t, err, "round 2 agent A")
	require.Empty(t, res.StopReason)
	require.Len(t, res.Rounds, 1)
	require.Equal(t, res.Rounds[0].A.Usage.Add(res.Rounds[0].B.Usage), res.Usage.Total)
}

func TestRun_ProviderBadResponse_TreatedAsUnparseable(t *testing.T) {
	t.Parallel()
	billed := llm.Usage{InputTokens: 100, OutputTokens: 30}
	p := &failing{next: simulated.New(simulated.Config{}), at: 1, err: &llm.Error{Kind: llm.ErrBadResponse, Provider: "simulated", Usage: billed}}
	res, err := newEngine(t, p).Run(t.Context(), task("[sim:converge]"), engine.Options{})
	require.NoError(t, err)
	require.Equal(t, engine.StopConverged, res.StopReason)
	a1 := res.Rounds[0].A
	require.Equal(t, 2, a1.Attempts)
	require.True(t, a1.Valid)
	require.GreaterOrEqual(t, a1.Usage.InputTokens, billed.InputTokens+1, "the bad reply's billed tokens are counted")
	requireResultConsistent(t, res)
}

func TestRun_InvalidTask_ErrInvalidTask(t *testing.T) {
	t.Parallel()
	rec := &recorder{next: simulated.New(simulated.Config{})}
	_, err := newEngine(t, rec).Run(t.Context(), engine.Task{Prompt: "  "}, engine.Options{})
	require.ErrorIs(t, err, engine.ErrInvalidTask)
	require.Zero(t, rec.calls())
}

func TestRun_ConcurrentTasksOnOneEngine(t *testing.T) {
	t.Parallel()
	e := newEngine(t, simulated.New(simulated.Config{Latency: time.Millisecond}))
	markers := []string{"[sim:converge]", "[sim:stalemate]", "[sim:never]", "[sim:flat]"}
	want := []engine.StopReason{engine.StopConverged, engine.StopStalemate, engine.StopMaxRounds, engine.StopConverged}
	var wg sync.WaitGroup
	results := make([]engine.Result, 64)
	errs := make([]error, 64)
	for i := range results {
		wg.Go(func() {
			results[i], errs[i] = e.Run(t.Context(), task(markers[i%4]), engine.Options{})
		})
	}
	wg.Wait()
	for i, res := range results {
		require.NoError(t, errs[i])
		require.Equal(t, want[i%4], res.StopReason, "task %d", i)
	}
}

func TestRun_RequestsAlternateRolesAndEndWithUser(t *testing.T) {
	t.Parallel()
	rec := &recorder{next: simulated.New(simulated.Config{})}
	tk := task("[sim:never]")
	tk.Context = "We run on PostgreSQL and NATS."
	_, err := newEngine(t, rec).Run(t.Context(), tk, engine.Options{})
	require.NoError(t, err)
	for i, req := range rec.requests() {
		require.NotEmpty(t, req.System)
		require.NotNil(t, req.Schema)
		require.Equal(t, "convergence_turn", req.Schema.Name)
		require.Equal(t, int64(1500), req.MaxTokens)
		require.Contains(t, req.Messages[0].Content, "We run on PostgreSQL and NATS.")
		for j, m := range req.Messages {
			want := llm.RoleUser
			if j%2 == 1 {
				want = llm.RoleAssistant
			}
			require.Equal(t, want, m.Role, "request %d message %d", i, j)
			require.NotEmpty(t, m.Content)
		}
		require.Equal(t, llm.RoleUser, req.Messages[len(req.Messages)-1].Role)
	}
	reqs := rec.requests()
	require.Contains(t, reqs[0].System, "You are Solution Architect")
	require.Contains(t, reqs[1].System, "You are Security and Reliability Reviewer")
	require.Contains(t, reqs[1].Messages[0].Content, "[Agent A · Solution Architect · round 1]", "B sees A's first proposal")
}

// stalledSynthesis plays the agents with the simulated provider but never answers the
// synthesis until its context ends.
type stalledSynthesis struct{ next llm.Provider }

func (s stalledSynthesis) Name() string { return s.next.Name() }

func (s stalledSynthesis) Complete(ctx context.Context, req llm.Request) (llm.Response, error) {
	if req.Schema.Name == "convergence_synthesis" {
		<-ctx.Done()
		return llm.Response{}, ctx.Err()
	}
	return s.next.Complete(ctx, req)
}

func TestRun_TimeoutDuringSynthesis_ConvergedWithFinalProposal(t *testing.T) {
	t.Parallel()
	tk := task("[sim:converge]")
	tk.Timeout = 300 * time.Millisecond
	res, err := newEngine(t, stalledSynthesis{simulated.New(simulated.Config{})}).Run(t.Context(), tk, engine.Options{})
	require.NoError(t, err)
	require.Equal(t, engine.StopConverged, res.StopReason, "the agents did converge; only the polish ran out of time")
	require.False(t, res.Synthesized)
	require.Nil(t, res.Synthesis)
	require.Equal(t, res.Rounds[2].B.Reply.Proposal, res.Output)
	requireResultConsistent(t, res)
}

func TestRun_CancelledDuringSynthesis_Cancelled(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	res, err := newEngine(t, stalledSynthesis{simulated.New(simulated.Config{})}).Run(ctx, task("[sim:converge]"), engine.Options{
		OnRound: func(_ context.Context, rd engine.Round) error {
			if rd.Number == 3 {
				time.AfterFunc(10*time.Millisecond, cancel)
			}
			return nil
		},
	})
	require.NoError(t, err)
	require.Equal(t, engine.StopCancelled, res.StopReason)
	require.Len(t, res.Rounds, 3)
	requireResultConsistent(t, res)
}

func TestRun_SynthesisOverBudget_ConvergedWithFinalProposal(t *testing.T) {
	t.Parallel()
	free, err := newEngine(t, simulated.New(simulated.Config{})).Run(t.Context(), task("[sim:converge]"), engine.Options{})
	require.NoError(t, err)

	tk := task("[sim:converge]")
	// Enough for the rounds (each projected with a 1500-token output cap), not for a
	// synthesis projected with its 3000-token cap.
	tk.TokenBudget = free.Usage.Total.Total() - free.Usage.Synthesis.Total() + 2500
	rec := &recorder{next: simulated.New(simulated.Config{})}
	res, err := newEngine(t, rec).Run(t.Context(), tk, engine.Options{})
	require.NoError(t, err)
	require.Equal(t, engine.StopConverged, res.StopReason)
	require.False(t, res.Synthesized)
	require.Equal(t, 6, rec.calls())
	require.Equal(t, res.Rounds[2].B.Reply.Proposal, res.Output)
	require.LessOrEqual(t, res.Usage.Total.Total(), tk.TokenBudget)
}
