package converger

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/convergence-dev/convergence/internal/taskspec"
	"github.com/convergence-dev/convergence/pkg/events"
	"github.com/convergence-dev/convergence/pkg/events/consumer"
	"github.com/convergence-dev/convergence/services/converger/engine"
	"github.com/convergence-dev/convergence/services/converger/llm"
	"github.com/convergence-dev/convergence/services/converger/tasks"
)

// errCancelRequested is the cancellation cause of a run whose tenant cancelled the task.
var errCancelRequested = errors.New("cancelled by the tenant")

// writeTimeout bounds each database write of a run. The engine hands its callbacks a context
// that outlives the run's cancellation, so a billed turn is still recorded while a task is
// being cancelled or timing out.
const writeTimeout = 15 * time.Second

// handle runs the task of one converge.request. It returns nil once the task's end is
// recorded (or when there is nothing to run), and an error to have the request redelivered:
// the next delivery resumes from the persisted turns.
func (s *Service) handle(ctx context.Context, ev consumer.Event[events.ConvergeRequest]) error {
	id := ev.Data.TaskID
	if !taskspec.ValidID(id) {
		return consumer.Permanent(fmt.Errorf("converge.request names no valid task id (%q)", id))
	}
	log := s.logger.With("task_id", id, "event_id", ev.Envelope.ID, "delivery", ev.Delivery)
	if ev.Envelope.RequestID != "" {
		log = log.With("request_id", ev.Envelope.RequestID)
	}

	// Registered before the claim, so a cancel request that arrives as the task starts finds
	// the run.
	runCtx, cancelRun := context.WithCancelCause(ctx)
	defer cancelRun(nil)
	defer s.running.add(id, cancelRun)()

	claim, err := s.store.Claim(ctx, ev.Data, ev.Envelope.RequestID)
	if errors.Is(err, tasks.ErrNotClaimable) {
		log.Debug("task already finished; request acknowledged without running it")
		s.metrics.skipped.Inc()
		return nil
	}
	if err != nil {
		return err
	}
	if claim.CancelRequested {
		cancelRun(errCancelRequested)
	}
	s.metrics.inFlight.Inc()
	defer s.metrics.inFlight.Dec()
	r := &taskRun{s: s, claim: claim, cancel: cancelRun, log: log}
	return r.run(ctx, runCtx, ev.Delivery)
}

// taskRun is one run of a task: what its engine callbacks need.
type taskRun struct {
	s      *Service
	claim  tasks.Claim
	cancel context.CancelCauseFunc
	log    *slog.Logger
	// pendingB is agent B's turn of the round being closed; SaveRound writes it with the round.
	pendingB engine.Turn
}

func (r *taskRun) run(ctx, runCtx context.Context, delivery uint64) error {
	s, c := r.s, r.claim
	task := c.Request.EngineTask(c.TaskID)
	if norm, err := s.engine.Limits().Normalize(task); err == nil {
		// The timeout counts from the task's first start, across restarts.
		var cancel context.CancelFunc
		runCtx, cancel = context.WithDeadline(runCtx, c.StartedAt.Add(norm.Timeout))
		defer cancel()
	}
	if len(c.Turns) > 0 {
		r.log.Info("resuming task", "run", c.Run, "persisted_turns", len(c.Turns))
	}
	r.publish(tasks.Progress{TaskID: c.TaskID, Kind: tasks.KindStarted, Status: string(tasks.StatusRunning)})

	res, err := s.engine.Run(runCtx, task, engine.Options{Resume: c.Turns, OnTurn: r.onTurn, OnRound: r.onRound})
	cause := context.Cause(runCtx)
	switch {
	case errors.Is(err, tasks.ErrFenced) || errors.Is(cause, tasks.ErrFenced):
		r.log.Warn("a later run took the task over; this run stops without recording its end")
		return nil
	case ctx.Err() != nil && (err != nil || (res.StopReason == engine.StopCancelled && !errors.Is(cause, errCancelRequested))):
		// Shutting down: the next delivery resumes the task from its persisted turns.
		r.log.Info("shutting down; task left to its next delivery", "rounds", len(res.Rounds))
		return fmt.Errorf("task %s interrupted by shutdown: %w", c.TaskID, context.Cause(ctx))
	}

	var o tasks.Outcome
	switch {
	case err == nil && res.StopReason == engine.StopCancelled:
		o = tasks.Outcome{Status: tasks.StatusCancelled, Result: tasks.ResultOf(res, ""), Error: "cancelled by the tenant"}
	case err == nil:
		o = tasks.Outcome{Status: tasks.StatusCompleted, Result: tasks.ResultOf(res, "")}
	case retryable(err) && delivery < uint64(s.cfg.MaxDeliver):
		r.log.Warn("task run failed; it resumes from its persisted turns on redelivery", "err", err, "rounds", len(res.Rounds))
		return err
	default:
		r.log.Error("task failed", "err", err, "rounds", len(res.Rounds))
		o = tasks.Outcome{Status: tasks.StatusFailed, Result: tasks.ResultOf(res, tasks.StopError), Error: publicError(err)}
	}

	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), writeTimeout)
	defer cancel()
	if err := s.store.Finish(fctx, s.deps.Outbox, c, o); err != nil {
		if errors.Is(err, tasks.ErrFenced) {
			r.log.Warn("a later run took the task over before it finished; its end is left to that run")
			return nil
		}
		return err
	}
	if c.Request.WebhookURL != "" {
		s.deliverer.Wake()
	}
	r.publish(tasks.Progress{TaskID: c.TaskID, Kind: tasks.KindFinished, Status: string(o.Status)})
	s.observe(c, o)
	r.log.Info("task finished", "status", o.Status, "stop_reason", o.Result.StopReason,
		"score", o.Result.ConvergenceScore, "rounds", o.Result.Rounds, "total_tokens", o.Result.Usage.TotalTokens)
	return nil
}

// onTurn persists a turn before the engine makes its next call. B's turn is held back and
// written with its round by onRound, one statement for both; nothing is called in between.
func (r *taskRun) onTurn(ctx context.Context, t engine.Turn) error {
	if t.Agent == engine.AgentB {
		r.pendingB = t
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, writeTimeout)
	defer cancel()
	err := r.s.store.SaveTurn(ctx, r.claim, t)
	if errors.Is(err, tasks.ErrFenced) {
		r.cancel(tasks.ErrFenced)
	}
	return err
}

// onRound persists the round and its B turn, streams it, and picks up a cancellation whose
// core-NATS message did not reach this process.
func (r *taskRun) onRound(ctx context.Context, rd engine.Round) error {
	view, err := json.Marshal(tasks.RoundViewOf(r.claim.TaskID, rd))
	if err != nil {
		return fmt.Errorf("encode round: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, writeTimeout)
	defer cancel()
	cancelRequested, err := r.s.store.SaveRound(ctx, r.claim, r.pendingB, view, rd.Score.Value)
	if err != nil {
		if errors.Is(err, tasks.ErrFenced) {
			r.cancel(tasks.ErrFenced)
		}
		return err
	}
	r.s.metrics.rounds.Inc()
	r.publish(tasks.Progress{TaskID: r.claim.TaskID, Kind: tasks.KindRound, Round: view})
	if cancelRequested {
		r.cancel(errCancelRequested)
	}
	return nil
}

// publish sends a progress event of the run's task.
func (r *taskRun) publish(p tasks.Progress) { r.s.publishProgress(p, r.claim.RequestID) }

func (s *Service) observe(c tasks.Claim, o tasks.Outcome) {
	s.metrics.finished.WithLabelValues(string(o.Status), o.Result.StopReason).Inc()
	s.metrics.duration.Observe(time.Since(c.StartedAt).Seconds())
	u := o.Result.Usage
	p := s.provider.Name()
	s.metrics.tokens.WithLabelValues(p, "input").Add(float64(u.InputTokens))
	s.metrics.tokens.WithLabelValues(p, "output").Add(float64(u.OutputTokens))
	s.metrics.tokens.WithLabelValues(p, "cached").Add(float64(u.CachedTokens))
}

// retryable reports whether a failed run may succeed when its request is delivered again:
// anything but an invalid task, unusable persisted turns, or a request the provider rejects.
func retryable(err error) bool {
	return !errors.Is(err, engine.ErrInvalidTask) && !errors.Is(err, engine.ErrInvalidResume) &&
		!errors.Is(err, llm.ErrPermanent)
}

// publicError is what a tenant is told about a failed run: what failed, not the provider's
// or the database's own words, which the log keeps.
func publicError(err error) string {
	var te *engine.TaskError
	var pe *llm.Error
	switch {
	case errors.As(err, &te):
		return "invalid task: " + te.Error()
	case errors.As(err, &pe) && errors.Is(pe, llm.ErrPermanent):
		return fmt.Sprintf("the LLM provider rejected the request (status %d)", pe.StatusCode)
	case errors.As(err, &pe) && errors.Is(pe, llm.ErrRateLimited):
		return "the LLM provider kept rate limiting the task; retry it later"
	case errors.As(err, &pe):
		return "the LLM provider failed to answer: " + pe.Kind.Error()
	case errors.Is(err, engine.ErrInvalidResume):
		return "the task's saved progress could not be resumed"
	default:
		return "internal error while running the task"
	}
}
