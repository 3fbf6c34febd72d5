package api

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/labstack/echo/v4"
	"github.com/nats-io/nats.go"

	"github.com/convergence-dev/convergence/internal/httpx"
	"github.com/convergence-dev/convergence/internal/natsrpc"
	"github.com/convergence-dev/convergence/internal/pgerr"
	"github.com/convergence-dev/convergence/internal/taskspec"
	contract "github.com/convergence-dev/convergence/pkg/api"
	"github.com/convergence-dev/convergence/pkg/events"
)

// convergeAPI serves the convergence endpoints. It lives in convergeRoutes' closures rather than
// in Service, so the endpoints own their state.
type convergeAPI struct {
	s       *Service
	cfg     ConvergeConfig
	limits  taskspec.Limits
	limiter *limiter
	prices  *modelPrices
	backlog *backlog
	waits   *tenantSlots
	streams *tenantSlots
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
//
// and the OpenAI-compatible endpoints on openAI (openai.go).
func (s *Service) convergeRoutes(tenant, openAI *echo.Group) {
	cfg := s.convergeConfig()
	h := &convergeAPI{
		s:       s,
		cfg:     cfg,
		limits:  taskspec.DefaultLimits(),
		limiter: newLimiter(s.deps.Pool, s.plans, cfg.RateLimit),
		prices:  newModelPrices(s.deps.NC),
		backlog: newBacklog(s.deps.JS, cfg.MaxBacklog),
		waits:   newTenantSlots("sync waits", cfg.MaxTenantWaits),
		streams: newTenantSlots("progress streams", cfg.MaxTenantStreams),
	}
	create, read := h.limiter.middleware(classCreate), h.limiter.middleware(classRead)
	tenant.POST("/converge", h.create(""), create)
	for _, t := range []taskspec.TaskType{taskspec.TypeDesign, taskspec.TypeReview, taskspec.TypeDecide, taskspec.TypePlan, taskspec.TypeAnalyze, taskspec.TypeGenerate} {
		tenant.POST("/"+string(t), h.create(t), create)
	}
	tenant.GET("/converge/:taskId", h.get, read)
	tenant.GET("/converge/:taskId/events", h.events, read)
	tenant.DELETE("/converge/:taskId", h.cancel, read)
	tenant.GET("/webhooks/secret", h.webhookSecret, read)
	tenant.POST("/webhooks/secret/rotate", h.rotateWebhookSecret, read, s.audited(auditWebhookSecretRotate))
	h.openAIRoutes(openAI)
}

// taskAnswer is the body of every answer about one task; Task is the converger's view of it.
type taskAnswer struct {
	Success bool            `json:"success"`
	TaskID  string          `json:"taskId"`
	Task    json.RawMessage `json:"task"`
}

// create queues a task of type shortcut ("" lets the body choose) and, unless the caller asked
// for an async answer, waits for its result up to the sync wait: 200 with the finished task,
// or 202 with the task as it stands. The API's record of the task and its converge.request
// event, which carries the whole request to the converger, are written in one round trip.
func (h *convergeAPI) create(shortcut taskspec.TaskType) echo.HandlerFunc {
	return func(c echo.Context) error {
		in, err := decodeConvergeInput(c)
		if err != nil {
			return err
		}
		v, err := h.check(c, in, shortcut)
		if err != nil {
			return err
		}
		pref := parsePrefer(c.Request().Header)
		wait := h.cfg.SyncWait
		if pref.wait > 0 {
			wait = pref.wait
		}
		id, done, err := h.submit(c, v, v.async || pref.async || wait == 0, wait)
		if err != nil {
			return err
		}
		if done {
			return h.answer(c, http.StatusOK, tenantOf(c).EnvID, id)
		}
		return h.answer(c, http.StatusAccepted, tenantOf(c).EnvID, id)
	}
}

// check validates in for the request's tenant against the platform's limits and its plan's,
// and checks that its model is priced.
func (h *convergeAPI) check(c echo.Context, in contract.ConvergeRequest, shortcut taskspec.TaskType) (validated, error) {
	plan := h.s.plans.limits(tenantOf(c).Plan)
	v, err := validate(in, shortcut, h.limits, plan)
	if err != nil {
		return v, err
	}
	return v, h.prices.checkPriced(c.Request().Context(), v.request.Model, plan)
}

// submit queues the task v describes for the request's tenant and, unless async, waits up to
// wait for it to finish; done reports that it has.
//
// A request with an Idempotency-Key that an earlier one with the same body used gets that
// one's task instead (see idempotency.go).
func (h *convergeAPI) submit(c echo.Context, v validated, async bool, wait time.Duration) (id string, done bool, err error) {
	ctx := c.Request().Context()
	t := tenantOf(c)
	key, err := idempotencyOf(c, v)
	if err != nil {
		return "", false, err
	}
	if key != nil {
		if e, err := h.lookup(ctx, t.EnvID, key); err != nil || e != nil {
			if err != nil {
				return "", false, err
			}
			return h.replay(c, t.EnvID, e)
		}
	}
	id = taskspec.NewID()
	var sub *nats.Subscription
	if !async {
		// Held before the task is recorded, so a refused wait records nothing.
		release, err := h.waits.take(t.EnvID)
		if err != nil {
			return "", false, err
		}
		defer release()
		// Subscribed before the task exists, so its end cannot be missed.
		if sub, err = h.s.deps.NC.SubscribeSync(events.ProgressSubject(id)); err != nil {
			return "", false, httpx.Unavailable("the message bus")
		}
		defer func() { _ = sub.Unsubscribe() }()
	}
	// The platform's backlog last, so that it counts only tasks nothing else refuses.
	if err := h.backlog.admit(ctx); err != nil {
		return "", false, err
	}
	if err := h.record(ctx, t, v.event(id, t), httpx.RequestID(c), key); err != nil {
		if errors.Is(err, errIdempotencyKeyTaken) {
			// A concurrent request with the key recorded its task first.
			e, lerr := h.lookup(ctx, t.EnvID, key)
			if lerr != nil || e == nil {
				return "", false, cmp.Or(lerr, err)
			}
			return h.replay(c, t.EnvID, e)
		}
		return "", false, err
	}
	c.Response().Header().Set(echo.HeaderLocation, "/api/v1/converge/"+id)
	if !async {
		if done, err = h.awaitFinished(ctx, sub, t.EnvID, id, wait); err != nil {
			return "", false, err
		}
	}
	status := http.StatusAccepted
	if done {
		status = http.StatusOK
	}
	h.answered(ctx, t.EnvID, key, status)
	return id, done, nil
}

// replay answers a retried create with the task its first request made: finished if the first
// answer was, or, while the first request is still waiting, if the task has finished by now.
func (h *convergeAPI) replay(c echo.Context, envID int64, e *earlier) (string, bool, error) {
	c.Response().Header().Set(echo.HeaderLocation, "/api/v1/converge/"+e.taskID)
	c.Response().Header().Set("Idempotent-Replayed", "true")
	if e.status != 0 {
		return e.taskID, e.status == http.StatusOK, nil
	}
	st, err := h.state(c.Request().Context(), envID, e.taskID, events.TaskQuery{})
	return e.taskID, err == nil && st.Finished(), err
}

// awaitFinished waits until task id has finished, for at most wait (see Service.await), on its
// progress messages and the converger's record.
func (h *convergeAPI) awaitFinished(ctx context.Context, sub *nats.Subscription, envID int64, id string, wait time.Duration) (bool, error) {
	return h.s.await(ctx, sub, wait, pollInterval,
		func(m *nats.Msg) bool {
			p, err := events.DecodeProgress(m.Data)
			return err == nil && p.Kind == events.ProgressFinished
		},
		func(ctx context.Context) (bool, error) {
			st, err := h.state(ctx, envID, id, events.TaskQuery{})
			return st.Finished(), err
		})
}

// answer sends the task as it stands, with its transcript.
func (h *convergeAPI) answer(c echo.Context, status int, envID int64, id string) error {
	ctx := c.Request().Context()
	if status != http.StatusOK && ctx.Err() != nil {
		return nil // The caller went away; there is no one to answer.
	}
	st, err := h.state(ctx, envID, id, events.TaskQuery{Transcript: true})
	if err != nil {
		return err
	}
	return c.JSON(status, taskAnswer{Success: true, TaskID: id, Task: st.Task})
}

// record reserves the run's worst case against tenant t's budgets (reserve), then writes the
// API's record of task req.TaskID and its converge.request (write); a run not recorded gives its
// reservation back.
func (h *convergeAPI) record(ctx context.Context, t Tenant, req events.ConvergeRequest, requestID string, key *idempotency) error {
	release, err := h.reserve(ctx, t, &req)
	if err != nil {
		return err
	}
	if err := h.write(ctx, req, requestID, key, h.s.plans.limits(t.Plan)); err != nil {
		release()
		return err
	}
	return nil
}

// write records the task and its converge.request in one round trip, unless the tenant already
// has the unfinished tasks its plan allows.
func (h *convergeAPI) write(ctx context.Context, req events.ConvergeRequest, requestID string, key *idempotency, plan planLimits) error {
	env, err := events.NewEnvelope(eventSource, events.TypeConvergeRequest, req.TaskID, requestID, req)
	if err != nil {
		return err
	}
	// record_task (migration 00009) checks the tenant's cap and records the task; over the cap
	// it raises, which rolls the batch's implicit transaction back, event included.
	b := &pgx.Batch{}
	if key != nil {
		queueKey(b, req.EnvID, req.TaskID, key)
	}
	b.Queue(`SELECT record_task($1, $2, $3, $4, $5, $6)`, req.TaskID, req.EnvID, req.OrgID, env.Data, requestID, plan.TasksInFlight)
	err = h.s.deps.Outbox.Batch(ctx, b, events.SubjectConvergeRequest, env)
	if pgerr.IsUniqueViolation(err, "idempotency_keys_pkey") {
		return errIdempotencyKeyTaken
	}
	if pgerr.Is(err, "CV429") {
		return &httpx.Error{
			Status: http.StatusTooManyRequests,
			Code:   "too_many_tasks",
			Message: fmt.Sprintf("tasksInFlight: this tenant has %d unfinished convergence tasks, the limit of plan %q; retry once some have finished, "+
				"cancel some, or move the organization to a larger plan", plan.TasksInFlight, plan.Plan),
			RetryAfter: 5 * time.Second,
		}
	}
	if err != nil {
		return fmt.Errorf("record task: %w", err)
	}
	return nil
}

// recorded reads the API's record of tenant envID's task id: its request as the converger was
// sent it, or a 404.
func (h *convergeAPI) recorded(ctx context.Context, envID int64, id string) (events.ConvergeRequest, string, time.Time, error) {
	var req events.ConvergeRequest
	var raw []byte
	var requestID *string
	var created time.Time
	err := h.s.deps.Pool.QueryRow(ctx, `SELECT request, request_id, created_at FROM tasks WHERE id = $1 AND env_id = $2`, id, envID).
		Scan(&raw, &requestID, &created)
	if errors.Is(err, pgx.ErrNoRows) {
		return req, "", created, httpx.NotFound("task " + id)
	}
	if err != nil {
		return req, "", created, fmt.Errorf("read task %s: %w", id, err)
	}
	if err := json.Unmarshal(raw, &req); err != nil {
		return req, "", created, fmt.Errorf("decode task %s: %w", id, err)
	}
	if requestID != nil {
		return req, *requestID, created, nil
	}
	return req, "", created, nil
}

// state asks the converger for tenant envID's task id. A task the API recorded and the
// converger has not seen yet (its converge.request is still on its way) is queued; one the API
// never recorded is a 404.
func (h *convergeAPI) state(ctx context.Context, envID int64, id string, q events.TaskQuery) (events.TaskState, error) {
	q.EnvID, q.TaskID = envID, id
	st, err := natsrpc.Call[events.TaskQuery, events.TaskState](ctx, h.s.deps.NC, events.SubjectTaskGet, q)
	if !natsrpc.IsCode(err, natsrpc.CodeNotFound) {
		return st, fromService(err, "the converger, which keeps tasks,")
	}
	req, requestID, created, err := h.recorded(ctx, envID, id)
	if err != nil {
		return st, err
	}
	// The fields the converger's view of a task has before its first run.
	view, err := json.Marshal(contract.Task{TaskID: id, Status: contract.TaskStatusQueued, Type: req.Type, AgentARole: req.AgentARole,
		AgentBRole: req.AgentBRole, MaxRounds: req.MaxRounds, Model: req.Model, WebhookURL: req.WebhookURL,
		RequestID: requestID, CreatedAt: created})
	if err != nil {
		return st, fmt.Errorf("encode task %s: %w", id, err)
	}
	return events.TaskState{Status: events.TaskQueued, Task: view}, nil
}

// taskParam is the task ID in the path, or a 404 for anything that cannot be one.
func taskParam(c echo.Context) (string, error) {
	id := c.Param("taskId")
	if !taskspec.ValidID(id) {
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
	return h.answer(c, http.StatusOK, tenantOf(c).EnvID, id)
}
