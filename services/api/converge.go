package api

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/nats-io/nats.go"

	"github.com/convergence-dev/convergence/internal/httpx"
	"github.com/convergence-dev/convergence/pkg/events"
	"github.com/convergence-dev/convergence/services/converger/engine"
	"github.com/convergence-dev/convergence/services/converger/tasks"
)

// convergeAPI serves the convergence endpoints. It lives in convergeRoutes' closures rather than
// in Service, so the endpoints own their state.
type convergeAPI struct {
	s       *Service
	cfg     ConvergeConfig
	store   *tasks.Store
	limits  engine.Limits
	limiter *limiter
}

// pollInterval is how often a waiting request or a progress stream reads the task's record,
// in case a core-NATS progress message was lost.
const pollInterval = 2 * time.Second

// convergeRoutes registers the tenants' convergence endpoints:
//
//	POST   /api/v1/converge                 create a task (sync by default; "async": true answers 202 at once)
//	POST   /api/v1/{design,review,decide,plan,analyze,generate}   the same, with the type set
//	GET    /api/v1/converge/:taskId         status, result, transcript and usage
//	GET    /api/v1/converge/:taskId/events  Server-Sent Events: one "round" per round, then "result"
//	DELETE /api/v1/converge/:taskId         cancel
//	GET    /api/v1/webhooks/secret          the tenant's webhook signing secret
//	POST   /api/v1/webhooks/secret/rotate   a new secret (the old one signs too for a day)
func (s *Service) convergeRoutes(tenant *echo.Group) {
	cfg := s.convergeConfig()
	h := &convergeAPI{
		s:       s,
		cfg:     cfg,
		store:   tasks.NewStore(s.deps.Pool),
		limits:  engine.DefaultLimits(),
		limiter: newLimiter(s.deps.Pool, cfg.RateLimit),
	}
	create, read := h.limiter.middleware(classCreate), h.limiter.middleware(classRead)
	tenant.POST("/converge", h.create(""), create)
	for _, t := range []engine.TaskType{engine.TypeDesign, engine.TypeReview, engine.TypeDecide, engine.TypePlan, engine.TypeAnalyze, engine.TypeGenerate} {
		tenant.POST("/"+string(t), h.create(t), create)
	}
	tenant.GET("/converge/:taskId", h.get, read)
	tenant.GET("/converge/:taskId/events", h.events, read)
	tenant.DELETE("/converge/:taskId", h.cancel, read)
	tenant.GET("/webhooks/secret", h.webhookSecret, read)
	tenant.POST("/webhooks/secret/rotate", h.rotateWebhookSecret, read)
}

// taskAnswer is the body of every answer about one task.
type taskAnswer struct {
	Success bool       `json:"success"`
	TaskID  string     `json:"taskId"`
	Task    tasks.View `json:"task"`
}

// create queues a task of type shortcut ("" lets the body choose) and, unless the caller asked
// for an async answer, waits for its result up to the sync wait: 200 with the finished task,
// or 202 with the task as it stands. The task and its converge.request event are written in
// one transaction.
func (h *convergeAPI) create(shortcut engine.TaskType) echo.HandlerFunc {
	return func(c echo.Context) error {
		in, err := decodeConvergeInput(c)
		if err != nil {
			return err
		}
		v, err := validate(in, shortcut, h.limits)
		if err != nil {
			return err
		}
		ctx := c.Request().Context()
		t := tenantOf(c)
		pref := parsePrefer(c.Request().Header)
		wait := h.cfg.SyncWait
		if pref.wait > 0 {
			wait = pref.wait
		}
		async := v.async || pref.async || wait == 0

		id := tasks.NewID()
		var sub *nats.Subscription
		if !async {
			// Subscribed before the task exists, so its end cannot be missed.
			if sub, err = h.s.deps.NC.SubscribeSync(events.ProgressSubject(id)); err != nil {
				return httpx.Unavailable("the message bus")
			}
			defer func() { _ = sub.Unsubscribe() }()
		}
		err = tasks.Create(ctx, h.s.deps.Outbox, tasks.NewTask{ID: id, EnvID: t.EnvID, OrgID: t.OrgID, Request: v.request, RequestID: httpx.RequestID(c)})
		if err != nil {
			return err
		}
		c.Response().Header().Set(echo.HeaderLocation, "/api/v1/converge/"+id)
		if !async {
			if done, err := h.awaitFinished(ctx, sub, t.EnvID, id, wait); err != nil || done {
				if err != nil {
					return err
				}
				return h.answer(c, http.StatusOK, t.EnvID, id)
			}
		}
		return h.answer(c, http.StatusAccepted, t.EnvID, id)
	}
}

// awaitFinished waits until task id has finished, for at most wait, on its progress
// messages, and reads the record every pollInterval in case one was lost. It reports false
// when the wait ran out, the caller went away, or the server began to shut down (the caller
// then gets its 202 with the task ID at once, and the task runs on).
func (h *convergeAPI) awaitFinished(ctx context.Context, sub *nats.Subscription, envID int64, id string, wait time.Duration) (bool, error) {
	deadline := time.Now().Add(wait)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if draining := httpx.Draining(ctx); draining != nil {
		go func() {
			select {
			case <-draining:
				cancel()
			case <-ctx.Done():
			}
		}()
	}
	for {
		left := time.Until(deadline)
		if left <= 0 || ctx.Err() != nil {
			return false, nil
		}
		stepCtx, stepCancel := context.WithTimeout(ctx, min(left, pollInterval))
		msg, err := sub.NextMsgWithContext(stepCtx)
		stepCancel()
		switch {
		case err == nil:
			if p, err := tasks.DecodeProgress(msg.Data); err == nil && p.Kind == tasks.KindFinished {
				return true, nil
			}
		case ctx.Err() != nil:
			return false, nil
		case errors.Is(err, context.DeadlineExceeded):
			rec, err := h.store.Get(ctx, envID, id)
			if err != nil {
				return false, err
			}
			if rec.Status.Finished() {
				return true, nil
			}
		default:
			return false, httpx.Unavailable("the message bus")
		}
	}
}

// answer sends the task as it stands, with its transcript.
func (h *convergeAPI) answer(c echo.Context, status int, envID int64, id string) error {
	ctx := c.Request().Context()
	if status != http.StatusOK && ctx.Err() != nil {
		return nil // The caller went away; there is no one to answer.
	}
	rec, err := h.store.Get(ctx, envID, id)
	if err != nil {
		return err
	}
	rounds, err := h.store.Rounds(ctx, id, 0)
	if err != nil {
		return err
	}
	return c.JSON(status, taskAnswer{Success: true, TaskID: id, Task: rec.View(tasks.Views(rounds))})
}

// taskParam is the task ID in the path, or a 404 for anything that cannot be one.
func taskParam(c echo.Context) (string, error) {
	id := c.Param("taskId")
	if !tasks.ValidID(id) {
		return "", httpx.NotFound("task " + truncate(id, 64))
	}
	return id, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// get answers GET /api/v1/converge/:taskId: the task's status, result, transcript and usage.
// Another tenant's task is not found.
func (h *convergeAPI) get(c echo.Context) error {
	id, err := taskParam(c)
	if err != nil {
		return err
	}
	err = h.answer(c, http.StatusOK, tenantOf(c).EnvID, id)
	if errors.Is(err, tasks.ErrNotFound) {
		return httpx.NotFound("task " + id)
	}
	return err
}
