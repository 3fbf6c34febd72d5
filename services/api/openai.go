package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/nats-io/nats.go"

	"github.com/convergence-dev/convergence/internal/httpx"
	"github.com/convergence-dev/convergence/internal/taskspec"
	contract "github.com/convergence-dev/convergence/pkg/api"
	"github.com/convergence-dev/convergence/pkg/events"
)

// The OpenAI-compatible surface: teams that already use an OpenAI SDK point it at the
// platform (base URL <api>/v1, the tenant's key as the API key) and pick a convergence as the
// model. The last user message is the prompt; a system message is the task's context; the
// metadata fields agent_a_role and agent_b_role set the two roles. The answer is the
// converged output in OpenAI's chat completion shape, with the task's usage, and its id,
// score and stop reason in a "convergence" field; with stream set, as OpenAI streams it
// (chatStream).
//
//	GET  /v1/models             the convergence models
//	POST /v1/chat/completions   a convergence, answered when it has finished
func (h *convergeAPI) openAIRoutes(v1 *echo.Group) {
	create, read := h.limiter.middleware(classCreate), h.limiter.middleware(classRead)
	v1.GET("/models", h.models, read)
	v1.POST("/chat/completions", h.chatCompletion, create)
}

// modelPrefix starts every model name: convergence-design is a design task, and so on.
const modelPrefix = "convergence-"

func (h *convergeAPI) models(c echo.Context) error {
	list := contract.ModelList{Object: contract.List}
	for _, t := range taskspec.TaskTypes() {
		list.Data = append(list.Data, contract.Model{ID: modelPrefix + string(t), Object: contract.ModelObjectModel, OwnedBy: "convergence"})
	}
	return c.JSON(http.StatusOK, list)
}

// The body of POST /v1/chat/completions is a [contract.ChatRequest]: OpenAI's fields, the ones
// that have no meaning here accepted and left alone, so that SDKs' defaults pass; any other
// field is refused, as everywhere in the API.

// messageText is m's content: a string, or the text parts of a list of parts.
func messageText(m contract.ChatMessage) (string, error) {
	var s string
	if err := json.Unmarshal(m.Content, &s); err == nil {
		return s, nil
	}
	var parts []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	if err := json.Unmarshal(m.Content, &parts); err != nil {
		return "", httpx.BadRequest("messages: the content of a %s message must be a string or a list of text parts", m.Role)
	}
	var b strings.Builder
	for _, p := range parts {
		if p.Type != "text" {
			return "", httpx.BadRequest("messages: a content part of type %q is not supported; send text", p.Type)
		}
		b.WriteString(p.Text)
	}
	return b.String(), nil
}

// convergeRequestOf turns the chat request r into the convergence it asks for.
func convergeRequestOf(r contract.ChatRequest) (contract.ConvergeRequest, taskspec.TaskType, error) {
	typ, ok := strings.CutPrefix(string(r.Model), modelPrefix)
	if !ok || !taskspec.TaskType(typ).Valid() {
		return contract.ConvergeRequest{}, "", httpx.BadRequest("model %q is not a convergence: use one of GET /v1/models, such as %sdesign", r.Model, modelPrefix)
	}
	if r.N != 0 && r.N != 1 {
		return contract.ConvergeRequest{}, "", httpx.BadRequest("n: a convergence has one answer; leave n out or set it to 1")
	}
	var in contract.ConvergeRequest
	for _, m := range r.Messages {
		text, err := messageText(m)
		if err != nil {
			return contract.ConvergeRequest{}, "", err
		}
		switch m.Role {
		case "system", "developer":
			in.Context = text
		case "user":
			in.Prompt = text
		case "assistant", "tool":
		default:
			return contract.ConvergeRequest{}, "", httpx.BadRequest("messages: role %q is not known: use system, user or assistant", m.Role)
		}
	}
	if in.Prompt == "" {
		return contract.ConvergeRequest{}, "", httpx.BadRequest("messages: send at least one user message; the last one is the prompt")
	}
	for k, v := range r.Metadata {
		switch k {
		case "agent_a_role":
			in.AgentARole = v
		case "agent_b_role":
			in.AgentBRole = v
		default:
			return contract.ConvergeRequest{}, "", httpx.BadRequest("metadata: %q is not known: use agent_a_role and agent_b_role", k)
		}
	}
	return in, taskspec.TaskType(typ), nil
}

// chatCompletion runs a convergence and answers with its output as a chat completion. A task
// that has not finished within the sync wait is answered 504, with its id to follow it by.
func (h *convergeAPI) chatCompletion(c echo.Context) error {
	var req contract.ChatRequest
	if err := httpx.DecodeJSON(c, &req, `send an OpenAI chat completion request, e.g. {"model": "convergence-design", "messages": [{"role": "user", "content": "Design a rate limiter"}]}`); err != nil {
		return err
	}
	in, typ, err := convergeRequestOf(req)
	if err != nil {
		return err
	}
	v, err := h.check(c, in, typ)
	if err != nil {
		return err
	}
	if req.Stream {
		return h.chatStream(c, req, v)
	}
	id, done, err := h.submit(c, v, false, h.cfg.SyncWait)
	if err != nil {
		return err
	}
	if !done {
		return &httpx.Error{Status: http.StatusGatewayTimeout, Code: "timeout",
			Message: fmt.Sprintf("the convergence is still running after %s; follow it with GET /api/v1/converge/%s", h.cfg.SyncWait, id)}
	}
	task, err := h.finishedTask(c.Request().Context(), tenantOf(c).EnvID, id)
	if err != nil {
		return err
	}
	if f := failure(task, id); f != nil {
		return f
	}
	return c.JSON(http.StatusOK, chatCompletionOf(string(req.Model), id, task))
}

// failure says why the finished task t has no answer to give, or is nil when it completed.
func failure(t contract.Task, id string) *httpx.Error {
	if t.Status == contract.TaskStatusCompleted {
		return nil
	}
	msg := t.Error
	if msg == "" {
		msg = "the convergence ended as " + string(t.Status)
	}
	return &httpx.Error{Status: http.StatusBadGateway, Code: "task_" + string(t.Status),
		Message: fmt.Sprintf("%s; GET /api/v1/converge/%s has the task", msg, id)}
}

func (h *convergeAPI) finishedTask(ctx context.Context, envID int64, id string) (contract.Task, error) {
	st, err := h.state(ctx, envID, id, events.TaskQuery{})
	if err != nil {
		return contract.Task{}, err
	}
	var t contract.Task
	if err := json.Unmarshal(st.Task, &t); err != nil {
		return contract.Task{}, fmt.Errorf("read task %s: %w", id, err)
	}
	return t, nil
}

// chatCompletionOf is the finished task id, t, as a chat completion of model.
func chatCompletionOf(model, id string, t contract.Task) contract.ChatCompletion {
	created := t.FinishedAt
	if created.IsZero() {
		created = time.Now()
	}
	r := t.Result
	choice := contract.ChatChoice{FinishReason: "stop"}
	choice.Message.Role, choice.Message.Content = contract.ChatChoiceMessageRoleAssistant, r.Output
	return contract.ChatCompletion{
		ID: "chatcmpl-" + id, Object: contract.ChatCompletionObjectChatCompletion, Created: created.Unix(), Model: model,
		Choices: []contract.ChatChoice{choice},
		Usage:   contract.ChatUsage{PromptTokens: t.Usage.InputTokens, CompletionTokens: t.Usage.OutputTokens, TotalTokens: t.Usage.TotalTokens},
		Convergence: contract.ChatConvergence{TaskID: id, ConvergenceScore: r.ConvergenceScore, Converged: r.Converged,
			StopReason: string(r.StopReason), Rounds: r.Rounds},
	}
}

// chatStream answers a chat completion with stream set as OpenAI streams one: Server-Sent
// Events of chat.completion.chunk objects, ended by "data: [DONE]". The assistant's role comes
// at once; each round, as it is scored, comes as an SSE comment (clients skip comments, and
// it keeps the connection alive); the converged output comes as one content chunk once the
// task has finished, then the finish reason, and the usage when stream_options.include_usage
// asks for it. A task that ends otherwise than completed ends the stream with an error event.
// A retry with the Idempotency-Key of an earlier request streams the earlier request's task
// (Idempotent-Replayed: true), from where it stands: no second task runs.
func (h *convergeAPI) chatStream(c echo.Context, req contract.ChatRequest, v validated) error {
	ctx := c.Request().Context()
	t := tenantOf(c)
	release, err := h.streams.take(t.EnvID)
	if err != nil {
		return err
	}
	defer release()
	key, err := idempotencyOf(c, v)
	if err != nil {
		return err
	}
	var earlier *earlier
	if key != nil {
		if earlier, err = h.lookup(ctx, t.EnvID, key); err != nil {
			return err
		}
	}
	id := taskspec.NewID()
	if earlier != nil {
		id = earlier.taskID
	}
	// Subscribed before the task exists, so none of its progress is missed.
	live := make(chan *nats.Msg, 64)
	sub, err := h.s.deps.NC.ChanSubscribe(events.ProgressSubject(id), live)
	if err != nil {
		return httpx.Unavailable("the message bus")
	}
	defer func() { _ = sub.Unsubscribe() }()
	if earlier == nil {
		if err := h.backlog.admit(ctx); err != nil {
			return err
		}
		err := h.record(ctx, t, v.event(id, t), httpx.RequestID(c), key)
		if errors.Is(err, errIdempotencyKeyTaken) {
			// A concurrent request with the key recorded its task first: stream that one.
			if earlier, err = h.lookup(ctx, t.EnvID, key); err == nil && earlier == nil {
				err = errIdempotencyKeyTaken
			}
			if err == nil {
				_ = sub.Unsubscribe()
				id = earlier.taskID
				if sub, err = h.s.deps.NC.ChanSubscribe(events.ProgressSubject(id), live); err != nil {
					return httpx.Unavailable("the message bus")
				}
			}
		}
		if err != nil {
			return err
		}
	}
	if earlier != nil {
		c.Response().Header().Set("Idempotent-Replayed", "true")
	}

	c.Response().Header().Set(echo.HeaderLocation, "/api/v1/converge/"+id)
	st := openEventStream(c.Response())
	chunk := chatChunk{ID: "chatcmpl-" + id, Object: "chat.completion.chunk", Created: time.Now().Unix(), Model: string(req.Model)}
	send := func(data any) {
		b, _ := json.Marshal(data)
		st.write("data: " + string(b) + "\n\n")
	}
	send(chunk.with(chatDelta{Role: "assistant"}, nil))

	poll := time.NewTicker(pollInterval)
	defer poll.Stop()
	// No task outlives its timeout by much; a stream that would is ended, the task left to GET.
	bound := time.NewTimer(h.limits.MaxTimeout + time.Minute)
	defer bound.Stop()
	finished := false
	if earlier != nil {
		st, err := h.state(ctx, t.EnvID, id, events.TaskQuery{})
		finished = err == nil && st.Finished()
	}
	for !finished {
		select {
		case <-ctx.Done():
			return nil // The client left; the task runs on, as an async one would.
		case <-bound.C:
			send(map[string]any{"error": map[string]any{"code": "timeout",
				"message": fmt.Sprintf("the convergence is still running; follow it with GET /api/v1/converge/%s", id)}})
			return nil
		case m := <-live:
			p, err := events.DecodeProgress(m.Data)
			switch {
			case err != nil:
			case p.Kind == events.ProgressRound:
				var r struct {
					Round int `json:"round"`
					Score struct {
						Value int `json:"value"`
					} `json:"score"`
				}
				if json.Unmarshal(p.Round, &r) == nil {
					st.write(fmt.Sprintf(": round %d scored %d\n\n", r.Round, r.Score.Value))
				}
			case p.Kind == events.ProgressFinished:
				finished = true
			}
		case <-poll.C:
			// Progress messages are at most once: the record says when one was lost.
			st, err := h.state(ctx, t.EnvID, id, events.TaskQuery{})
			finished = err == nil && st.Finished()
		}
	}
	task, err := h.finishedTask(ctx, t.EnvID, id)
	if err != nil {
		send(map[string]any{"error": map[string]any{"code": "error",
			"message": fmt.Sprintf("%v; GET /api/v1/converge/%s has the task", err, id)}})
		return nil
	}
	if f := failure(task, id); f != nil {
		send(map[string]any{"error": map[string]any{"code": f.Code, "message": f.Message}})
		return nil
	}
	send(chunk.with(chatDelta{Content: task.Result.Output}, nil))
	stop := "stop"
	send(chunk.with(chatDelta{}, &stop))
	if req.StreamOptions.IncludeUsage {
		done := chatCompletionOf(string(req.Model), id, task)
		send(map[string]any{"id": chunk.ID, "object": chunk.Object, "created": chunk.Created, "model": chunk.Model,
			"choices": []any{}, "usage": done.Usage, "convergence": done.Convergence})
	}
	st.write("data: [DONE]\n\n")
	return nil
}

type chatChunk struct {
	ID      string            `json:"id"`
	Object  string            `json:"object"`
	Created int64             `json:"created"`
	Model   string            `json:"model"`
	Choices []chatChunkChoice `json:"choices"`
}

type chatChunkChoice struct {
	Index        int       `json:"index"`
	Delta        chatDelta `json:"delta"`
	FinishReason *string   `json:"finish_reason"`
}

type chatDelta struct {
	Role    string `json:"role,omitempty"`
	Content string `json:"content,omitempty"`
}

// with is the chunk carrying delta, and the finish reason when there is one.
func (c chatChunk) with(d chatDelta, finish *string) chatChunk {
	c.Choices = []chatChunkChoice{{Delta: d, FinishReason: finish}}
	return c
}
