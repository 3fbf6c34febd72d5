package client

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"time"

	"github.com/convergence-dev/convergence/pkg/api"
)

// Task types.
const (
	TypeDesign   = "design"
	TypeReview   = "review"
	TypeDecide   = "decide"
	TypePlan     = "plan"
	TypeAnalyze  = "analyze"
	TypeGenerate = "generate"
	TypeCustom   = "custom"
)

// Task statuses.
const (
	StatusQueued    = api.TaskStatusQueued
	StatusRunning   = api.TaskStatusRunning
	StatusCompleted = api.TaskStatusCompleted
	StatusFailed    = api.TaskStatusFailed
	StatusCancelled = api.TaskStatusCancelled
)

// Request asks two agents to converge. Only Prompt is required; the API picks roles for the
// task type and bounds the rest. Async asks for an answer at once (202, status queued) instead
// of waiting for the result; WebhookURL receives the result, signed with the tenant's webhook
// secret.
type Request = api.ConvergeRequest

// RequestOption sets optional fields of a Request made by a shortcut such as Design.
type RequestOption func(*Request)

// WithRoles sets the two agents' roles.
func WithRoles(agentA, agentB string) RequestOption {
	return func(r *Request) { r.AgentARole, r.AgentBRole = agentA, agentB }
}

// WithContext adds background the agents should take into account.
func WithContext(text string) RequestOption { return func(r *Request) { r.Context = text } }

// WithMaxRounds bounds the rounds.
func WithMaxRounds(n int) RequestOption { return func(r *Request) { r.MaxRounds = n } }

// WithModel picks the model.
func WithModel(m string) RequestOption { return func(r *Request) { r.Model = m } }

// WithAsync asks for an answer at once; follow the task with Wait or Stream.
func WithAsync() RequestOption { return func(r *Request) { r.Async = true } }

// WithWebhook has the result POSTed to url.
func WithWebhook(url string) RequestOption { return func(r *Request) { r.WebhookURL = url } }

// Task is a convergence task as the API shows it; its Result is set once it has Finished.
type Task = api.Task

// Result is the outcome of a finished task.
type Result = api.Result

// Round is one round of the transcript: a turn of each agent and the round's score.
type Round = api.Round

// Converge submits req. Without Async it waits for the result: the API waits up to its
// bound, and when the task outlasts that (202), Converge goes on waiting (Wait) while ctx
// allows; if ctx ends first, it returns the task as it stood, unfinished (Finished says so;
// Wait picks it up again). With Async it returns the task as queued.
func (c *Client) Converge(ctx context.Context, req Request) (*Task, error) {
	if req.Prompt == "" {
		return nil, errors.New("convergence: empty prompt")
	}
	var a api.TaskAnswer
	if err := c.call(ctx, http.MethodPost, "/api/v1/converge", req, &a); err != nil {
		return nil, err
	}
	if !req.Async && !a.Task.Finished() {
		if t, err := c.Wait(ctx, a.Task.TaskID); err == nil || ctx.Err() == nil {
			return t, err
		}
	}
	return &a.Task, nil
}

func (c *Client) shortcut(ctx context.Context, typ, prompt string, opts []RequestOption) (*Task, error) {
	req := Request{Prompt: prompt, Type: api.ConvergeRequestType(typ)}
	for _, o := range opts {
		o(&req)
	}
	return c.Converge(ctx, req)
}

// Design asks the agents to design something.
func (c *Client) Design(ctx context.Context, prompt string, opts ...RequestOption) (*Task, error) {
	return c.shortcut(ctx, TypeDesign, prompt, opts)
}

// Review asks the agents to review something.
func (c *Client) Review(ctx context.Context, prompt string, opts ...RequestOption) (*Task, error) {
	return c.shortcut(ctx, TypeReview, prompt, opts)
}

// Decide asks the agents to decide between options.
func (c *Client) Decide(ctx context.Context, prompt string, opts ...RequestOption) (*Task, error) {
	return c.shortcut(ctx, TypeDecide, prompt, opts)
}

// Plan asks the agents for a plan.
func (c *Client) Plan(ctx context.Context, prompt string, opts ...RequestOption) (*Task, error) {
	return c.shortcut(ctx, TypePlan, prompt, opts)
}

// Analyze asks the agents for an analysis.
func (c *Client) Analyze(ctx context.Context, prompt string, opts ...RequestOption) (*Task, error) {
	return c.shortcut(ctx, TypeAnalyze, prompt, opts)
}

// Generate asks the agents to generate something.
func (c *Client) Generate(ctx context.Context, prompt string, opts ...RequestOption) (*Task, error) {
	return c.shortcut(ctx, TypeGenerate, prompt, opts)
}

// Task returns the task with its transcript so far.
func (c *Client) Task(ctx context.Context, taskID string) (*Task, error) {
	var a api.TaskAnswer
	if err := c.call(ctx, http.MethodGet, "/api/v1/converge/"+url.PathEscape(taskID), nil, &a); err != nil {
		return nil, err
	}
	return &a.Task, nil
}

// Cancel asks the platform to stop the task. It returns the task as it stands; the task ends
// with stop reason cancelled shortly after.
func (c *Client) Cancel(ctx context.Context, taskID string) (*Task, error) {
	var a api.TaskAnswer
	if err := c.call(ctx, http.MethodDelete, "/api/v1/converge/"+url.PathEscape(taskID), nil, &a); err != nil {
		return nil, err
	}
	return &a.Task, nil
}

// Wait returns the task once it has finished, polling with a growing interval (up to two
// seconds). It returns ctx's error as soon as ctx is done.
func (c *Client) Wait(ctx context.Context, taskID string) (*Task, error) {
	interval := 100 * time.Millisecond
	for {
		t, err := c.Task(ctx, taskID)
		if err != nil {
			return nil, err
		}
		if t.Finished() {
			return t, nil
		}
		timer := time.NewTimer(interval)
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil, ctx.Err()
		case <-timer.C:
		}
		interval = min(interval*2, 2*time.Second)
	}
}
