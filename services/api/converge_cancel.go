package api

import (
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/convergence-dev/convergence/internal/httpx"
	"github.com/convergence-dev/convergence/internal/natsrpc"
	"github.com/convergence-dev/convergence/pkg/events"
)

// cancelWait is how long DELETE waits for a running task to end as cancelled before it
// answers 202.
const cancelWait = 5 * time.Second

// cancel answers DELETE /api/v1/converge/:taskId, by asking the converger. A queued task is
// cancelled at once (200). A running task's run is told on core NATS, and the request is
// recorded so the run finds it at its next round even if that message is lost; the answer is 200 with the
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

	req, requestID, _, err := h.recorded(ctx, envID, id)
	if err != nil {
		return err
	}
	st, err := natsrpc.Call[events.TaskCancel, events.TaskState](ctx, h.s.deps.NC, events.SubjectTaskCancel,
		events.TaskCancel{Request: req, RequestID: requestID})
	if err != nil {
		return fromService(err, "the converger, which keeps tasks,")
	}
	switch st.Status {
	case events.TaskCompleted, events.TaskFailed:
		return httpx.Conflict("task %s has already %s; there is nothing to cancel", id, st.Status)
	case events.TaskCancelled:
		return h.answer(c, http.StatusOK, envID, id)
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
