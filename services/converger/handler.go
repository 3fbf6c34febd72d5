package converger

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
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

	// Its turn first, taken in turn with the other tenants' waiting tasks; the task stays
	// queued meanwhile. The run gives it back as soon as its engine is done.
	endTurn, err := s.turns.acquire(ctx, ev.Data.EnvID)
	if err != nil {
		return fmt.Errorf("task %s interrupted by shutdown before it ran: %w", id, err)
	}
	endTurn = sync.OnceFunc(endTurn)
	defer endTurn()

	claim, err := s.store.Claim(ctx, ev.Data, ev.Envelope.RequestID)
	if errors.Is(err, tasks.ErrNotClaimable) {
		s.metrics.skipped.Inc()
		return s.notClaimable(ctx, ev, log)
	}
	if err != nil {
		return err
	}
	if claim.CancelRequested {
		cancelRun(errCancelRequested)
	}
	r := &taskRun{s: s, claim: claim, cancel: cancelRun, endTurn: endTurn, log: log}
	return r.run(ctx, runCtx, ev.Delivery)
}

// notClaimable acknowledges a request whose task is not to be run: it has finished, or its
// tenant was destroyed, and then the task is cancelled (recorded first if need be), so that
// it does not stay queued.
func (s *Service) notClaimable(ctx context.Context, ev consumer.Event[events.ConvergeRequest], log *slog.Logger) error {
	destroyed, err := s.store.Destroyed(ctx, ev.Data.EnvID)
	if err != nil {
		return err
	}
	if !destroyed {
		log.Debug("task already finished; request acknowledged without running it")
		return nil
	}
	log.Info("the task's tenant was destroyed; the task is cancelled without running")
	_, err = s.cancel(ctx, ev.Data, ev.Envelope.RequestID)
	return err
}

// acquireSlot waits for one of the Concurrency slots of tasks that run their engine, and
// returns its release.
func (s *Service) acquireSlot(ctx context.Context) (release func(), err error) {
	select {
	case s.slots <- struct{}{}:
	case <-ctx.Done():
		return nil, context.Cause(ctx)
	}
	s.metrics.inFlight.Inc()
	return func() {
		s.metrics.inFlight.Dec()
		<-s.slots
	}, nil
}

// taskRun is one run of a task: what its engine callbacks need.
//
// A run writes once per round: the round, its view and its two turns in one statement. The
// write goes on while the engine makes its next call, and the run waits for it before the call
// after, before the next write and before it ends, so the writes of a task stay in order and
// a run that lost its task to a later one makes at most one call more before it stops. A crash
// loses at most the turns of the round under way, which the next delivery calls again.
type taskRun struct {
	s      *Service
	claim  tasks.Claim
	cancel context.CancelCauseFunc
	// endTurn lets the next waiting task be claimed; once is enough, more are nothing.
	endTurn func()
	log     *slog.Logger
	// held are the turns taken since the last round went to its write: the round under way's,
	// or the synthesis. They are written with their round, or when the run ends.
	held []engine.Turn
	// saving delivers the result of the round write in flight, if any.
	saving chan error
	// failed is the first write that failed. Nothing is written after it: turns that follow a
	// lost round would not resume.
	failed error
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
	release, err := s.acquireSlot(ctx)
	if err != nil {
		return fmt.Errorf("task %s interrupted by shutdown before it ran: %w", c.TaskID, err)
	}
	r.publish(tasks.Progress{TaskID: c.TaskID, Kind: tasks.KindStarted, Status: string(tasks.StatusRunning)})
	res, err := s.engine.Run(runCtx, task, engine.Options{Resume: c.Turns, OnTurn: r.onTurn, OnRound: r.onRound})
	if werr := r.settle(); werr != nil && err == nil {
		err = werr // A round the result holds is not stored: the next delivery runs it again.
	}
	// The slot and the turn go to the next tasks while this one is recorded.
	release()
	r.endTurn()
	cause := context.Cause(runCtx)
	switch {
	case errors.Is(err, tasks.ErrFenced) || errors.Is(cause, tasks.ErrFenced):
		r.log.Warn("a later run took the task over; this run stops without recording its end")
		return nil
	case ctx.Err() != nil && (err != nil || (res.StopReason == engine.StopCancelled && !errors.Is(cause, errCancelRequested))):
		// Shutting down: the next delivery resumes the task from its persisted turns.
		r.saveHeld(ctx)
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
		r.saveHeld(ctx)
		r.log.Warn("task run failed; it resumes from its persisted turns on redelivery", "err", err, "rounds", len(res.Rounds))
		return err
	default:
		r.log.Error("task failed", "err", err, "rounds", len(res.Rounds))
		o = tasks.Outcome{Status: tasks.StatusFailed, Result: tasks.ResultOf(res, tasks.StopError), Error: publicError(err)}
	}

	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), writeTimeout)
	defer cancel()
	if err := s.store.Finish(fctx, s.deps.Outbox, c, o, r.unsaved()...); err != nil {
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

// onTurn holds a new turn for its round's write, and stops the run before its next call if
// the last round's write failed.
func (r *taskRun) onTurn(_ context.Context, t engine.Turn) error {
	r.held = append(r.held, t)
	return r.settle()
}

// onRound hands the round and its turns to a write that runs while the engine goes on. Once
// the write is stored, the round is streamed, and a cancellation whose core-NATS message did not
// reach this process is picked up.
func (r *taskRun) onRound(ctx context.Context, rd engine.Round) error {
	if err := r.settle(); err != nil {
		return err
	}
	turns := r.held
	r.held = nil
	done := make(chan error, 1)
	r.saving = done
	// The service's store group-commits (New): StartRound only queues the write, and
	// the writer bounds its batch, so a timer of its own for each round would bound nothing.
	r.s.store.StartRound(ctx, r.claim, turns, rd, func(view []byte, cancelRequested bool, err error) {
		done <- r.roundSaved(view, cancelRequested, err)
	})
	return nil
}

// roundSaved is what follows a round's write: its progress event when it is stored, and the
// run's cancellation when the write found the task cancelled or taken over.
func (r *taskRun) roundSaved(view []byte, cancelRequested bool, err error) error {
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

// settle waits for the round write in flight, if any, and returns the first write error of
// the run.
func (r *taskRun) settle() error {
	if r.saving != nil {
		if err := <-r.saving; err != nil && r.failed == nil {
			r.failed = err
		}
		r.saving = nil
	}
	return r.failed
}

// unsaved returns the turns the run has not written: none once a write has failed.
func (r *taskRun) unsaved() []engine.Turn {
	if r.failed != nil {
		return nil
	}
	return r.held
}

// saveHeld writes the turns of a run that stops before its end, so that the next delivery
// resumes from them instead of calling for them again.
func (r *taskRun) saveHeld(ctx context.Context) {
	turns := r.unsaved()
	if len(turns) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), writeTimeout)
	defer cancel()
	if err := r.s.store.SaveTurns(ctx, r.claim, turns...); err != nil {
		r.log.Warn("save the turns of an interrupted run; the next delivery calls for them again", "turns", len(turns), "err", err)
	}
}

// publish sends a progress event of the run's task.
func (r *taskRun) publish(p tasks.Progress) { r.s.publishProgress(p, r.claim.RequestID) }

func (s *Service) observe(c tasks.Claim, o tasks.Outcome) {
	s.metrics.finished.WithLabelValues(string(o.Status), string(o.Result.StopReason)).Inc()
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
