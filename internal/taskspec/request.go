package taskspec

import (
	"time"

	"github.com/convergence-dev/convergence/pkg/events"
)

// Request is the converge.request that asks for t, a task [Limits.Normalize] returned, with
// the token budget and timeout as the caller gave them (zero for the converger's defaults, which
// may differ from the API's) and the webhook URL that gets the result. The caller sets TaskID,
// EnvID and OrgID.
func Request(t Task, tokenBudget int64, timeout time.Duration, webhookURL string) events.ConvergeRequest {
	return events.ConvergeRequest{
		Type:           string(t.Type),
		Prompt:         t.Prompt,
		AgentARole:     t.AgentARole,
		AgentBRole:     t.AgentBRole,
		Context:        t.Context,
		MaxRounds:      t.MaxRounds,
		Model:          t.Model,
		TokenBudget:    tokenBudget,
		TimeoutSeconds: timeout.Seconds(),
		WebhookURL:     webhookURL,
	}
}
