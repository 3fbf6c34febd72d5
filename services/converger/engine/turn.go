package engine

import (
	"time"

	"github.com/convergence-dev/convergence/services/converger/llm"
)

// Agent names who took a turn.
type Agent string

// The agents. Synthesis is the call that writes the final output after convergence.
const (
	AgentA         Agent = "A"
	AgentB         Agent = "B"
	AgentSynthesis Agent = "synthesis"
)

// Reply is an agent's parsed answer in one turn.
type Reply struct {
	// Proposal is the agent's complete current position.
	Proposal string `json:"proposal"`
	// Agreement is how far the agent agrees with the other agent's latest proposal, 0-100.
	Agreement int `json:"agreement"`
	// OpenIssues are the points the agent still disputes.
	OpenIssues []string `json:"openIssues"`
	// Concessions are the points the agent accepted from the other agent in this turn.
	Concessions []string `json:"concessions"`
	// Confidence is how sure the agent is of its proposal, 0-100.
	Confidence int `json:"confidence"`
}

// Turn is one agent's contribution: one provider call, or two when the first reply did not
// parse. Turns are what a service persists to resume a task (see Options.Resume), so a Turn
// holds everything the engine needs to rebuild its round.
type Turn struct {
	Agent Agent `json:"agent"`
	// Round is the round the turn belongs to, from 1. A synthesis turn carries the number of
	// the last round.
	Round int    `json:"round"`
	Role  string `json:"role"`
	// Valid is false when no attempt produced a reply that parsed; Reply is then empty and
	// the turn counts as agreement 0.
	Valid bool  `json:"valid"`
	Reply Reply `json:"reply"`
	// Output is the final text of a synthesis turn.
	Output string `json:"output,omitempty"`
	// Raw is the content of the last attempt as the provider returned it.
	Raw   string `json:"raw"`
	Model string `json:"model"`
	// Usage is the tokens billed for the turn, over every attempt.
	Usage llm.Usage `json:"usage"`
	// Attempts is the number of replies asked for: 1, or 2 when the first did not parse.
	Attempts int `json:"attempts"`
	// Duration is the wall time of the turn's provider calls.
	Duration time.Duration `json:"duration"`
}

// agreement is the turn's agreement as the score counts it: 0 unless the reply parsed.
func (t Turn) agreement() int {
	if !t.Valid {
		return 0
	}
	return t.Reply.Agreement
}
