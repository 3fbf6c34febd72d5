package taskspec

import "time"

// TaskType says what kind of answer a task wants; it picks default roles and the guidance
// both agents get.
type TaskType string

// The task types.
const (
	TypeDesign   TaskType = "design"
	TypeReview   TaskType = "review"
	TypeDecide   TaskType = "decide"
	TypePlan     TaskType = "plan"
	TypeAnalyze  TaskType = "analyze"
	TypeGenerate TaskType = "generate"
	TypeCustom   TaskType = "custom"
)

// TaskTypes lists every valid task type.
func TaskTypes() []TaskType {
	return []TaskType{TypeDesign, TypeReview, TypeDecide, TypePlan, TypeAnalyze, TypeGenerate, TypeCustom}
}

// Valid reports whether t is one of the task types.
func (t TaskType) Valid() bool {
	switch t {
	case TypeDesign, TypeReview, TypeDecide, TypePlan, TypeAnalyze, TypeGenerate, TypeCustom:
		return true
	}
	return false
}

// DefaultRoles returns the roles agents A and B take when a task names none.
func (t TaskType) DefaultRoles() (a, b string) {
	switch t {
	case TypeDesign:
		return "Solution Architect", "Security and Reliability Reviewer"
	case TypeReview:
		return "Senior Reviewer", "Author's Advocate"
	case TypeDecide:
		return "Decision Advocate", "Devil's Advocate"
	case TypePlan:
		return "Delivery Planner", "Risk Analyst"
	case TypeAnalyze:
		return "Analyst", "Skeptical Reviewer"
	case TypeGenerate:
		return "Creator", "Editor"
	default:
		return "Proposer", "Critic"
	}
}

// Task is one convergence request. Run applies [Limits.Normalize] to it first, so zero
// fields take their defaults.
type Task struct {
	// ID identifies the task in logs; the engine does not interpret it.
	ID string `json:"id,omitempty"`
	// Prompt is what the agents must answer. Required.
	Prompt string `json:"prompt"`
	// Type is the kind of task; default custom.
	Type TaskType `json:"type"`
	// AgentARole and AgentBRole are the agents' roles; default per Type (see DefaultRoles).
	AgentARole string `json:"agentARole"`
	AgentBRole string `json:"agentBRole"`
	// Context is background material both agents see with the prompt.
	Context string `json:"context,omitempty"`
	// MaxRounds bounds the rounds; default Limits.DefaultMaxRounds, at most
	// Limits.MaxRoundsCap, at least MinRounds.
	MaxRounds int `json:"maxRounds"`
	// Model is passed to the provider; empty means the provider's default.
	Model string `json:"model,omitempty"`
	// TokenBudget bounds the tokens the task may spend (Usage.Total); 0 means
	// Limits.DefaultTokenBudget, and a zero default means no bound.
	TokenBudget int64 `json:"tokenBudget,omitempty"`
	// Timeout bounds Run's wall time; default Limits.DefaultTimeout, at most
	// Limits.MaxTimeout.
	Timeout time.Duration `json:"timeout,omitempty"`
}
