package api

// Finished reports whether s is an end state: completed, failed or cancelled.
func (s TaskStatus) Finished() bool {
	return s == TaskStatusCompleted || s == TaskStatusFailed || s == TaskStatusCancelled
}

// Finished reports whether the task has ended; its Result is set then.
func (t Task) Finished() bool { return t.Status.Finished() }

// Components lists the breakdown's components; the score is the rounded sum of their points.
func (b ScoreBreakdown) Components() []ScoreComponent {
	return []ScoreComponent{b.Agreement, b.OpenIssues, b.Stability, b.Overlap}
}

// Add returns the sum of u and v.
func (u Usage) Add(v Usage) Usage {
	return Usage{
		InputTokens:  u.InputTokens + v.InputTokens,
		OutputTokens: u.OutputTokens + v.OutputTokens,
		CachedTokens: u.CachedTokens + v.CachedTokens,
		TotalTokens:  u.TotalTokens + v.TotalTokens,
	}
}

// Usage is the agent's tokens.
func (a AgentUsage) Usage() Usage {
	return Usage{InputTokens: a.InputTokens, OutputTokens: a.OutputTokens, CachedTokens: a.CachedTokens, TotalTokens: a.TotalTokens}
}
