package tasks

import (
	"math"
	"time"

	"github.com/convergence-dev/convergence/pkg/events"
	"github.com/convergence-dev/convergence/services/converger/engine"
)

// Request is a convergence request as the API accepted it: validated, with the type, roles and
// max rounds filled in. It arrives in a converge.request (RequestOfEvent), is stored as
// convergence_tasks.request, and is what the converger runs. TokenBudget and TimeoutSeconds
// stay zero unless the caller set them, so the converger's configured defaults apply.
type Request struct {
	Prompt         string  `json:"prompt"`
	Type           string  `json:"type"`
	AgentARole     string  `json:"agentARole"`
	AgentBRole     string  `json:"agentBRole"`
	Context        string  `json:"context,omitempty"`
	MaxRounds      int     `json:"maxRounds"`
	Model          string  `json:"model,omitempty"`
	TokenBudget    int64   `json:"tokenBudget,omitempty"`
	TimeoutSeconds float64 `json:"timeoutSeconds,omitempty"`
	WebhookURL     string  `json:"webhookUrl,omitempty"`
}

// Timeout is TimeoutSeconds as a duration; zero means the converger's default.
func (r Request) Timeout() time.Duration {
	return time.Duration(math.Round(r.TimeoutSeconds * float64(time.Second)))
}

// EngineTask is the engine's task for the request.
func (r Request) EngineTask(id string) engine.Task {
	return engine.Task{
		ID:          id,
		Prompt:      r.Prompt,
		Type:        engine.TaskType(r.Type),
		AgentARole:  r.AgentARole,
		AgentBRole:  r.AgentBRole,
		Context:     r.Context,
		MaxRounds:   r.MaxRounds,
		Model:       r.Model,
		TokenBudget: r.TokenBudget,
		Timeout:     r.Timeout(),
	}
}

// RequestOfEvent is the request a converge.request carries.
func RequestOfEvent(e events.ConvergeRequest) Request {
	return Request{
		Prompt:         e.Prompt,
		Type:           e.Type,
		AgentARole:     e.AgentARole,
		AgentBRole:     e.AgentBRole,
		Context:        e.Context,
		MaxRounds:      e.MaxRounds,
		Model:          e.Model,
		TokenBudget:    e.TokenBudget,
		TimeoutSeconds: e.TimeoutSeconds,
		WebhookURL:     e.WebhookURL,
	}
}
