package converger

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/convergence-dev/convergence/internal/natsrpc"
	"github.com/convergence-dev/convergence/internal/taskspec"
	"github.com/convergence-dev/convergence/pkg/api"
	"github.com/convergence-dev/convergence/pkg/events"
	"github.com/convergence-dev/convergence/services/converger/tasks"
	"github.com/convergence-dev/convergence/services/converger/webhook"
)

// queryTimeout bounds the answer to one question about a task or a webhook secret.
const queryTimeout = 10 * time.Second

// ServeQueries answers the questions other services ask the converger on the bus (the API's
// task and webhook endpoints) until ctx is done. Run serves them beside the runs; ServeQueries
// alone keeps the records answered without running tasks, for tests that play the runs.
func (s *Service) ServeQueries(ctx context.Context) error { return s.queries.Run(ctx) }

// Ready reports whether the converger answers on the bus; the process's /readyz includes it.
func (s *Service) Ready(context.Context) error { return s.queries.Serving() }

// queryServer is the server of the converger's questions.
func (s *Service) queryServer() *natsrpc.Server {
	srv := natsrpc.NewServer(s.deps.NC, "converger", s.logger)
	natsrpc.Handle(srv, events.SubjectTaskGet, queryTimeout, s.taskState)
	natsrpc.Handle(srv, events.SubjectTaskCancel, queryTimeout, s.cancelTask)
	natsrpc.Handle(srv, events.SubjectWebhookSecret, queryTimeout, s.webhookSecret)
	natsrpc.Handle(srv, events.SubjectTasksFinished, queryTimeout, s.finishedTasks)
	natsrpc.Handle(srv, events.SubjectTasksKnown, queryTimeout, s.knownTasks)
	natsrpc.Handle(srv, events.SubjectModelResolve, queryTimeout, s.resolveModel)
	return srv
}

// resolveModel answers a ModelQuery: the provider this converger calls, and the model a task
// naming q.Model asks it for. Every converger of a platform has the same provider.
func (s *Service) resolveModel(_ context.Context, q events.ModelQuery) (events.ModelResolved, error) {
	if q.Model == "" {
		q.Model = s.defaultModel
	}
	return events.ModelResolved{Provider: s.provider.Name(), Model: q.Model}, nil
}

// taskState answers a TaskQuery.
func (s *Service) taskState(ctx context.Context, q events.TaskQuery) (events.TaskState, error) {
	if !taskspec.ValidID(q.TaskID) {
		return events.TaskState{}, natsrpc.Errorf(natsrpc.CodeNotFound, "task %q", q.TaskID)
	}
	rec, err := s.store.Get(ctx, q.EnvID, q.TaskID)
	if errors.Is(err, tasks.ErrNotFound) {
		return events.TaskState{}, natsrpc.Errorf(natsrpc.CodeNotFound, "task %s", q.TaskID)
	}
	if err != nil {
		return events.TaskState{}, err
	}
	var stored []tasks.StoredRound
	if q.Transcript || q.Rounds {
		after := 0
		if !q.Transcript {
			after = q.RoundsAfter
		}
		if stored, err = s.store.Rounds(ctx, q.TaskID, after); err != nil {
			return events.TaskState{}, err
		}
	}
	var transcript []api.Round
	if q.Transcript {
		if transcript, err = tasks.Views(stored); err != nil {
			return events.TaskState{}, fmt.Errorf("task %s: %w", q.TaskID, err)
		}
	}
	view, err := json.Marshal(rec.View(transcript))
	if err != nil {
		return events.TaskState{}, fmt.Errorf("encode task %s: %w", q.TaskID, err)
	}
	st := events.TaskState{Status: string(rec.Status), Task: view}
	if q.Rounds {
		for _, r := range stored {
			if r.Number > q.RoundsAfter {
				st.Rounds = append(st.Rounds, events.TaskRound{Number: r.Number, View: r.View})
			}
		}
	}
	return st, nil
}

// cancelTask answers a TaskCancel (see cancel) with the task's status after it.
func (s *Service) cancelTask(ctx context.Context, c events.TaskCancel) (events.TaskState, error) {
	id := c.Request.TaskID
	if !taskspec.ValidID(id) {
		return events.TaskState{}, natsrpc.Errorf(natsrpc.CodeNotFound, "task %q", id)
	}
	status, err := s.cancel(ctx, c.Request, c.RequestID)
	if errors.Is(err, tasks.ErrNotFound) {
		return events.TaskState{}, natsrpc.Errorf(natsrpc.CodeNotFound, "task %s", id)
	}
	if err != nil {
		return events.TaskState{}, err
	}
	return events.TaskState{Status: string(status)}, nil
}

// cancel cancels the task of req: one that has not started at once (recorded first if its
// converge.request has not arrived yet), a running one at its next step, and it leaves a
// finished one as it is. It returns the task's status after it.
func (s *Service) cancel(ctx context.Context, req events.ConvergeRequest, requestID string) (tasks.Status, error) {
	id := req.TaskID
	if err := s.store.Accept(ctx, req, requestID); err != nil {
		return "", err
	}
	status, err := s.store.RequestCancel(ctx, s.deps.Outbox, req.EnvID, id)
	if err != nil {
		return "", err
	}
	switch status {
	case tasks.StatusCancelled:
		// Cancelled before it started: nobody runs it to say it ended.
		s.publishProgress(tasks.Progress{TaskID: id, Kind: tasks.KindFinished, Status: string(status)}, requestID)
	case tasks.StatusQueued, tasks.StatusRunning:
		// The replica that runs it stops it; the recorded request is its fallback.
		if err := s.deps.NC.Publish(tasks.CancelSubject(id), nil); err != nil {
			s.logger.Warn("publish cancel request; the run picks it up at its next round", "task_id", id, "err", err)
		}
	}
	return status, nil
}

// webhookSecret answers a WebhookSecretRequest.
func (s *Service) webhookSecret(ctx context.Context, r events.WebhookSecretRequest) (events.WebhookSecret, error) {
	var sec webhook.Secret
	var err error
	if r.Rotate {
		sec, err = s.secrets.Rotate(ctx, s.deps.Pool, r.EnvID, webhook.RotationGrace)
	} else {
		sec, err = s.secrets.Ensure(ctx, s.deps.Pool, r.EnvID)
	}
	if err != nil {
		return events.WebhookSecret{}, err
	}
	return events.WebhookSecret{Secret: sec.Current, PreviousSecret: sec.Previous, PreviousExpiresAt: sec.PreviousExpiresAt,
		CreatedAt: sec.CreatedAt, RotatedAt: sec.RotatedAt}, nil
}

// publishProgress sends a progress event on core NATS. Listeners fall back on the record, so a
// failure is only logged.
func (s *Service) publishProgress(p tasks.Progress, requestID string) {
	data, err := tasks.EncodeProgress(p, requestID)
	if err == nil {
		err = s.deps.NC.Publish(events.ProgressSubject(p.TaskID), data)
	}
	if err != nil {
		s.logger.Debug("publish progress", "task_id", p.TaskID, "err", err)
	}
}

// finishedTasks answers a FinishedTasksQuery.
func (s *Service) finishedTasks(ctx context.Context, q events.FinishedTasksQuery) (events.FinishedTasks, error) {
	if q.Limit < 1 || q.Limit > events.MaxPage {
		return events.FinishedTasks{}, natsrpc.Errorf(natsrpc.CodeInvalid, "limit %d: use 1 to %d", q.Limit, events.MaxPage)
	}
	return s.store.Finished(ctx, q)
}

// knownTasks answers a KnownTasksQuery.
func (s *Service) knownTasks(ctx context.Context, q events.KnownTasksQuery) (events.KnownTasks, error) {
	if len(q.TaskIDs) > events.MaxPage {
		return events.KnownTasks{}, natsrpc.Errorf(natsrpc.CodeInvalid, "%d task IDs: ask for at most %d at a time", len(q.TaskIDs), events.MaxPage)
	}
	known, err := s.store.Known(ctx, q.TaskIDs)
	if err != nil {
		return events.KnownTasks{}, err
	}
	out := events.KnownTasks{TaskIDs: make([]string, len(known)), Records: known}
	for i, t := range known {
		out.TaskIDs[i] = t.TaskID
	}
	return out, nil
}
