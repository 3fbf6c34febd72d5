package engine

import "github.com/convergence-dev/convergence/services/converger/llm"

// Usage is the tokens a run spent, per agent and in total. Total is the sum of the others.
type Usage struct {
	A         llm.Usage `json:"a"`
	B         llm.Usage `json:"b"`
	Synthesis llm.Usage `json:"synthesis"`
	Total     llm.Usage `json:"total"`
}

func (u *Usage) charge(agent Agent, v llm.Usage) {
	switch agent {
	case AgentA:
		u.A = u.A.Add(v)
	case AgentB:
		u.B = u.B.Add(v)
	default:
		u.Synthesis = u.Synthesis.Add(v)
	}
	u.Total = u.Total.Add(v)
}

// Result is the outcome of a run.
type Result struct {
	Status     Status     `json:"status"`
	StopReason StopReason `json:"stopReason"`
	// Score is the score of the last completed round; 0, with every component at 0, when no
	// round completed.
	Score Score `json:"score"`
	// Output is the final answer when the agents converged: the synthesis, or B's final
	// proposal when the synthesis could not be made (see Synthesized). When they did not
	// converge, Output says so and shows both final positions and what is disputed.
	Output string `json:"output"`
	// Synthesized reports whether Output was written by a synthesis call.
	Synthesized bool `json:"synthesized"`
	// Disputed lists the open issues of the last round, both agents', without duplicates.
	Disputed  []string `json:"disputed"`
	Rounds    []Round  `json:"rounds"`
	Synthesis *Turn    `json:"synthesis,omitempty"`
	Usage     Usage    `json:"usage"`
	Provider  string   `json:"provider"`
	// Model is the model that answered the last call, as the provider reported it.
	Model string `json:"model"`
}
