package tasks

import (
	"github.com/convergence-dev/convergence/pkg/api"
	"github.com/convergence-dev/convergence/pkg/events"
	"github.com/convergence-dev/convergence/services/converger/engine"
	"github.com/convergence-dev/convergence/services/converger/llm"
)

// Status is where a task is in its life.
type Status string

// The statuses.
const (
	StatusQueued    Status = events.TaskQueued
	StatusRunning   Status = events.TaskRunning
	StatusCompleted Status = events.TaskCompleted
	StatusFailed    Status = events.TaskFailed
	StatusCancelled Status = events.TaskCancelled
)

// Finished reports whether s is an end state.
func (s Status) Finished() bool {
	return s == StatusCompleted || s == StatusFailed || s == StatusCancelled
}

// StopError is the stop reason recorded for a run that failed.
const StopError = "error"

// A task as the API shows it (GET /api/v1/converge/:taskId, the answer of a sync converge, the
// result event of the progress stream, the data of a webhook) is an [api.Task]; its result, also
// stored as convergence_tasks.result, an [api.Result]; a round of its transcript, also an event
// of the progress stream, an [api.Round]. This file makes them from the engine's types.

// ResultOf is the Result of an engine run. stop overrides the run's stop reason (StopError for
// a run that failed).
func ResultOf(res engine.Result, stop string) api.Result {
	if stop == "" {
		stop = string(res.StopReason)
	}
	disputed := res.Disputed
	if disputed == nil {
		disputed = []string{}
	}
	if res.Score.MethodVersion == "" { // The run failed before the engine scored anything.
		res.Score = engine.Score{Breakdown: emptyBreakdown(), MethodVersion: engine.MethodVersion}
	}
	return api.Result{
		Converged:        res.Status == engine.StatusConverged && stop == string(engine.StopConverged),
		StopReason:       api.ResultStopReason(stop),
		ConvergenceScore: res.Score.Value,
		ScoreBreakdown:   breakdownOf(res.Score.Breakdown),
		ScoreMethod:      res.Score.MethodVersion,
		Output:           res.Output,
		Synthesized:      res.Synthesized,
		Disputed:         disputed,
		Rounds:           len(res.Rounds),
		Usage:            APIUsage(UsageOf(res.Usage.Total)),
		Agents:           AgentsOf(res),
		Provider:         res.Provider,
		Model:            res.Model,
	}
}

// APIUsage is u as the API shows it.
func APIUsage(u events.Usage) api.Usage {
	return api.Usage{InputTokens: u.InputTokens, OutputTokens: u.OutputTokens, CachedTokens: u.CachedTokens, TotalTokens: u.TotalTokens}
}

// EventUsage is u as the bus carries it.
func EventUsage(u api.Usage) events.Usage {
	return events.Usage{InputTokens: u.InputTokens, OutputTokens: u.OutputTokens, CachedTokens: u.CachedTokens, TotalTokens: u.TotalTokens}
}

// EventAgents is agents as the bus carries them.
func EventAgents(agents []api.AgentUsage) []events.AgentUsage {
	out := make([]events.AgentUsage, len(agents))
	for i, a := range agents {
		out[i] = events.AgentUsage{Agent: string(a.Agent), Provider: a.Provider, Model: a.Model, Calls: a.Calls, Usage: events.Usage{
			InputTokens: a.InputTokens, OutputTokens: a.OutputTokens, CachedTokens: a.CachedTokens, TotalTokens: a.TotalTokens,
		}}
	}
	return out
}

func breakdownOf(b engine.Breakdown) api.ScoreBreakdown {
	c := func(c engine.Component) api.ScoreComponent {
		return api.ScoreComponent{Weight: c.Weight, Input: c.Input, Value: c.Value, Points: c.Points}
	}
	return api.ScoreBreakdown{Agreement: c(b.Agreement), OpenIssues: c(b.OpenIssues), Stability: c(b.Stability), Overlap: c(b.Overlap)}
}

// UsageOf converts an llm.Usage into the platform's usage shape. Cache writes are part of
// InputTokens and are not reported apart.
func UsageOf(u llm.Usage) events.Usage {
	return events.Usage{
		InputTokens:  u.InputTokens,
		OutputTokens: u.OutputTokens,
		CachedTokens: u.CachedTokens,
		TotalTokens:  u.Total(),
	}
}

// AgentsOf splits a run's usage by agent, the unit metering prices: one entry per agent that
// made a call, whose usage is the engine's exact count for the agent and whose Calls counts
// the billed replies. A turn cut short by the end of the run (budget, timeout, cancel) after
// a billed reply that did not parse is not in the rounds, but its tokens are in the agent's
// usage; it counts as one call.
func AgentsOf(res engine.Result) []api.AgentUsage {
	type agg struct {
		calls int64
		kept  llm.Usage
		model string
	}
	var by [3]agg
	add := func(i int, t engine.Turn) {
		by[i].calls += int64(t.Attempts)
		by[i].kept = by[i].kept.Add(t.Usage)
		if t.Model != "" {
			by[i].model = t.Model
		}
	}
	for _, rd := range res.Rounds {
		add(0, rd.A)
		add(1, rd.B)
	}
	if res.Synthesis != nil {
		add(2, *res.Synthesis)
	}
	out := []api.AgentUsage{}
	for i, u := range [3]llm.Usage{res.Usage.A, res.Usage.B, res.Usage.Synthesis} {
		a := by[i]
		if u != a.kept {
			a.calls++
		}
		if a.calls == 0 && u.IsZero() {
			continue
		}
		if a.model == "" {
			a.model = res.Model
		}
		used := UsageOf(u)
		out = append(out, api.AgentUsage{
			Agent:        api.AgentUsageAgent([3]engine.Agent{engine.AgentA, engine.AgentB, engine.AgentSynthesis}[i]),
			Provider:     res.Provider,
			Model:        a.model,
			Calls:        a.calls,
			InputTokens:  used.InputTokens,
			OutputTokens: used.OutputTokens,
			CachedTokens: used.CachedTokens,
			TotalTokens:  used.TotalTokens,
		})
	}
	return out
}

// RoundViewOf is the view of a round of task taskID.
func RoundViewOf(taskID string, rd engine.Round) api.Round {
	return api.Round{
		TaskID:   taskID,
		Round:    rd.Number,
		Critique: rd.Critique,
		Score:    api.RoundScore{Value: rd.Score.Value, Breakdown: breakdownOf(rd.Score.Breakdown), MethodVersion: rd.Score.MethodVersion},
		A:        turnView(rd.A),
		B:        turnView(rd.B),
		Usage:    APIUsage(UsageOf(rd.A.Usage.Add(rd.B.Usage))),
	}
}

func turnView(t engine.Turn) api.Turn {
	v := api.Turn{
		Agent:       string(t.Agent),
		Role:        t.Role,
		Valid:       t.Valid,
		Proposal:    t.Reply.Proposal,
		Agreement:   t.Reply.Agreement,
		OpenIssues:  t.Reply.OpenIssues,
		Concessions: t.Reply.Concessions,
		Confidence:  t.Reply.Confidence,
		Attempts:    t.Attempts,
		Model:       t.Model,
		Usage:       APIUsage(UsageOf(t.Usage)),
		DurationMs:  t.Duration.Milliseconds(),
	}
	if v.OpenIssues == nil {
		v.OpenIssues = []string{}
	}
	if v.Concessions == nil {
		v.Concessions = []string{}
	}
	return v
}
