package tasks

import (
	"encoding/json"
	"time"

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

// View is a task as the API shows it: GET /api/v1/converge/:taskId, the answer of a sync
// converge, the result event of the progress stream, and the data of a webhook.
type View struct {
	TaskID     string `json:"taskId"`
	Status     Status `json:"status"`
	Type       string `json:"type"`
	AgentARole string `json:"agentARole"`
	AgentBRole string `json:"agentBRole"`
	MaxRounds  int    `json:"maxRounds"`
	Model      string `json:"model,omitempty"`
	// RoundsCompleted counts the rounds scored so far.
	RoundsCompleted int `json:"roundsCompleted"`
	// Usage is the tokens spent so far: the persisted turns' while the task runs, the exact
	// total (every billed call, also one cut short by the end) once it has finished.
	Usage events.Usage `json:"usage"`
	// Result is set once the task has finished.
	Result *Result `json:"result,omitempty"`
	// Rounds is the transcript so far, one entry per round as the progress stream sends it;
	// webhooks leave it out (GET the task for it).
	Rounds          []json.RawMessage `json:"rounds,omitempty"`
	Error           string            `json:"error,omitempty"`
	CancelRequested bool              `json:"cancelRequested,omitempty"`
	WebhookURL      string            `json:"webhookUrl,omitempty"`
	Webhook         *WebhookStatus    `json:"webhook,omitempty"`
	RequestID       string            `json:"requestId,omitempty"`
	CreatedAt       time.Time         `json:"createdAt"`
	StartedAt       *time.Time        `json:"startedAt,omitempty"`
	FinishedAt      *time.Time        `json:"finishedAt,omitempty"`
}

// WebhookStatus is where the delivery of a task's webhook stands.
type WebhookStatus struct {
	DeliveryID     string     `json:"deliveryId"`
	Status         string     `json:"status"` // pending, delivered, failed
	Attempts       int        `json:"attempts"`
	LastStatusCode int        `json:"lastStatusCode,omitempty"`
	LastError      string     `json:"lastError,omitempty"`
	DeliveredAt    *time.Time `json:"deliveredAt,omitempty"`
}

// Result is the outcome of a finished task, stored as convergence_tasks.result.
type Result struct {
	// Converged reports whether the agents agreed; StopReason says why the run ended:
	// converged, stalemate, max_rounds, budget_exhausted, timeout, cancelled, or error.
	Converged  bool   `json:"converged"`
	StopReason string `json:"stopReason"`
	// ConvergenceScore (0-100) is the last round's score; ScoreBreakdown its components, each
	// with its weight, input, value and points (the score is the rounded sum of the points);
	// ScoreMethod the version of the method that computed it.
	ConvergenceScore int              `json:"convergenceScore"`
	ScoreBreakdown   engine.Breakdown `json:"scoreBreakdown"`
	ScoreMethod      string           `json:"scoreMethod"`
	// Output is the converged answer, or, when the agents did not converge, a statement of
	// that with both final positions and what remains in dispute.
	Output      string   `json:"output"`
	Synthesized bool     `json:"synthesized"`
	Disputed    []string `json:"disputed"`
	Rounds      int      `json:"rounds"`
	// Usage is every token billed for the task; Agents splits it by agent, with the provider
	// and model that served each, as metering prices it.
	Usage    events.Usage        `json:"usage"`
	Agents   []events.AgentUsage `json:"agents"`
	Provider string              `json:"provider"`
	Model    string              `json:"model"`
}

// ResultOf is the Result of an engine run. stop overrides the run's stop reason (StopError for
// a run that failed).
func ResultOf(res engine.Result, stop string) Result {
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
	return Result{
		Converged:        res.Status == engine.StatusConverged && stop == string(engine.StopConverged),
		StopReason:       stop,
		ConvergenceScore: res.Score.Value,
		ScoreBreakdown:   res.Score.Breakdown,
		ScoreMethod:      res.Score.MethodVersion,
		Output:           res.Output,
		Synthesized:      res.Synthesized,
		Disputed:         disputed,
		Rounds:           len(res.Rounds),
		Usage:            UsageOf(res.Usage.Total),
		Agents:           AgentsOf(res),
		Provider:         res.Provider,
		Model:            res.Model,
	}
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
func AgentsOf(res engine.Result) []events.AgentUsage {
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
	out := []events.AgentUsage{}
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
		out = append(out, events.AgentUsage{
			Agent:    string([3]engine.Agent{engine.AgentA, engine.AgentB, engine.AgentSynthesis}[i]),
			Provider: res.Provider,
			Model:    a.model,
			Calls:    a.calls,
			Usage:    UsageOf(u),
		})
	}
	return out
}

// RoundView is one scored round as the API shows it: an event of the progress stream and an
// entry of View.Rounds.
type RoundView struct {
	TaskID   string       `json:"taskId"`
	Round    int          `json:"round"`
	Critique bool         `json:"critique"`
	Score    engine.Score `json:"score"`
	A        TurnView     `json:"a"`
	B        TurnView     `json:"b"`
	// Usage is what the round's two turns cost.
	Usage events.Usage `json:"usage"`
}

// TurnView is one agent's turn: its parsed reply (empty when no attempt parsed, Valid false),
// attempts, usage and time.
type TurnView struct {
	Agent       string       `json:"agent"`
	Role        string       `json:"role"`
	Valid       bool         `json:"valid"`
	Proposal    string       `json:"proposal"`
	Agreement   int          `json:"agreement"`
	OpenIssues  []string     `json:"openIssues"`
	Concessions []string     `json:"concessions"`
	Confidence  int          `json:"confidence"`
	Attempts    int          `json:"attempts"`
	Model       string       `json:"model,omitempty"`
	Usage       events.Usage `json:"usage"`
	DurationMs  int64        `json:"durationMs"`
}

// RoundViewOf is the view of a round of task taskID.
func RoundViewOf(taskID string, rd engine.Round) RoundView {
	return RoundView{
		TaskID:   taskID,
		Round:    rd.Number,
		Critique: rd.Critique,
		Score:    rd.Score,
		A:        turnView(rd.A),
		B:        turnView(rd.B),
		Usage:    UsageOf(rd.A.Usage.Add(rd.B.Usage)),
	}
}

func turnView(t engine.Turn) TurnView {
	v := TurnView{
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
		Usage:       UsageOf(t.Usage),
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
