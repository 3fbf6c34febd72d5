package engine

// StopReason says why a run ended.
type StopReason string

// The stop reasons. Empty means the run ended with an error, not a stop rule.
const (
	// StopConverged: from round two, outside a critique round, both replies parsed, the
	// score reached Config.ConvergeScore and both agreements Config.ConvergeAgreement.
	StopConverged StopReason = "converged"
	// StopStalemate: from round three, the score moved less than Config.StalemateDelta
	// points since the previous round.
	StopStalemate StopReason = "stalemate"
	// StopMaxRounds: Task.MaxRounds rounds were played without converging.
	StopMaxRounds StopReason = "max_rounds"
	// StopBudgetExhausted: the next call's projected tokens would have taken the task past
	// Task.TokenBudget, so it was not made.
	StopBudgetExhausted StopReason = "budget_exhausted"
	// StopTimeout: Task.Timeout, or the caller's deadline, passed.
	StopTimeout StopReason = "timeout"
	// StopCancelled: the caller's context was cancelled.
	StopCancelled StopReason = "cancelled"
)

// describe is the reason in words, for the output of a run that did not converge.
func (r StopReason) describe() string {
	switch r {
	case StopConverged:
		return "the agents converged"
	case StopStalemate:
		return "the discussion reached a stalemate: the convergence score stopped moving"
	case StopMaxRounds:
		return "the agents did not agree within the allowed rounds"
	case StopBudgetExhausted:
		return "the next call would have exceeded the token budget"
	case StopTimeout:
		return "the task ran out of time"
	case StopCancelled:
		return "the task was cancelled"
	default:
		return "the run failed"
	}
}

// Status is whether the agents converged.
type Status string

// The statuses.
const (
	StatusConverged    Status = "converged"
	StatusNotConverged Status = "not_converged"
)
