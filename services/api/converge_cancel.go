package api

import (
	"errors"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/nats-io/nats.go"

	"github.com/convergence-dev/convergence/internal/httpx"
	"github.com/convergence-dev/convergence/pkg/events"
	"github.com/convergence-dev/convergence/services/converger/tasks"
)

// cancelWait is how long DELETE waits for a running task to end as cancelled before it
// answers 202.
const cancelWait = 5 * time.Second

// cancel answers DELETE /api/v1/converge/:taskId. A queued task is cancelled at once (200). A
// running task's converger is told on core NATS, and the request is recorded so the converger
// finds it at its next round even if that message is lost; the answer is 200 with the
// cancelled task when it ends within cancelWait, else 202 with cancelRequested. Cancelling a
// cancelled task is a no-op (200); a completed or failed one is a 409.
func (h *convergeAPI) cancel(c echo.Context) error {
	id, err := taskParam(c)
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	envID := tenantOf(c).EnvID
	// Subscribed before the request is made, so the task's end cannot be missed.
	sub, err := h.s.deps.NC.SubscribeSync(events.ProgressSubject(id))
	if err != nil {
		return httpx.Unavailable("the message bus")
	}
	defer func() { _ = sub.Unsubscribe() }()

	status, err := h.store.RequestCancel(ctx, h.s.deps.Outbox, envID, id)
	switch {
	case errors.Is(err, tasks.ErrNotFound):
		return httpx.NotFound("task " + id)
	case err != nil:
		return err
	}
	switch status {
	case tasks.StatusCompleted, tasks.StatusFailed:
		return httpx.Conflict("task %s has already %s; there is nothing to cancel", id, status)
	case tasks.StatusCancelled:
		h.publishFinished(id, status)
		return h.answer(c, http.StatusOK, envID, id)
	}
	if err := h.s.deps.NC.Publish(tasks.CancelSubject(id), nil); err != nil {
		h.s.logger.Warn("publish cancel request; the converger picks it up at its next round", "task_id", id, "err", err)
	}
	done, err := h.awaitFinished(ctx, sub, envID, id, cancelWait)
	if err != nil {
		return err
	}
	if done {
		return h.answer(c, http.StatusOK, envID, id)
	}
	return h.answer(c, http.StatusAccepted, envID, id)
}

// publishFinished tells the task's listeners (sync waiters, progress streams) that it ended:
// the converger does so for the tasks it runs, the API for those it cancels before they start.
func (h *convergeAPI) publishFinished(id string, status tasks.Status) {
	data, err := tasks.EncodeProgress(tasks.Progress{TaskID: id, Kind: tasks.KindFinished, Status: status}, "")
	if err == nil {
		err = h.s.deps.NC.Publish(events.ProgressSubject(id), data)
	}
	if err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		h.s.logger.Debug("publish progress", "task_id", id, "err", err)
	}
}
