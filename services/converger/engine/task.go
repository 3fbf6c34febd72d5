package engine

import "github.com/convergence-dev/convergence/internal/taskspec"

// The task, its types and its limits are the request's contract, shared with the API, which
// checks a request before queueing it: package taskspec defines them.
type (
	// Task is one convergence request; see taskspec.Task.
	Task = taskspec.Task
	// TaskType says what kind of answer a task wants; see taskspec.TaskType.
	TaskType = taskspec.TaskType
	// Limits are the defaults and bounds applied to every task; see taskspec.Limits.
	Limits = taskspec.Limits
	// TaskError says which field of a task is wrong; see taskspec.TaskError.
	TaskError = taskspec.TaskError
)

// The task types.
const (
	TypeDesign   = taskspec.TypeDesign
	TypeReview   = taskspec.TypeReview
	TypeDecide   = taskspec.TypeDecide
	TypePlan     = taskspec.TypePlan
	TypeAnalyze  = taskspec.TypeAnalyze
	TypeGenerate = taskspec.TypeGenerate
	TypeCustom   = taskspec.TypeCustom
)

// MinRounds is the fewest rounds a task runs before it can converge.
const MinRounds = taskspec.MinRounds

// ErrInvalidTask is matched (errors.Is) by every *TaskError.
var ErrInvalidTask = taskspec.ErrInvalidTask

// DefaultLimits returns the limits used for zero fields.
func DefaultLimits() Limits { return taskspec.DefaultLimits() }

// guidance is what task type t asks the agents to produce.
func guidance(t TaskType) string {
	switch t {
	case TypeDesign:
		return "produce a concrete design: components, interfaces, data flow, and the trade-offs made."
	case TypeReview:
		return "review the material: findings ordered by severity, each with its evidence and a fix."
	case TypeDecide:
		return "reach a decision: the recommended option, the alternatives considered, and why."
	case TypePlan:
		return "produce an actionable plan: ordered steps, dependencies, risks and milestones."
	case TypeAnalyze:
		return "analyse the question: findings, the evidence for each, and conclusions."
	case TypeGenerate:
		return "produce the requested content itself, complete and ready to use."
	default:
		return "answer the prompt as well as it can be answered."
	}
}
