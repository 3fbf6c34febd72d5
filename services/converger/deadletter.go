package converger

import (
	"context"
	"errors"
	"fmt"

	"github.com/convergence-dev/convergence/internal/taskspec"
	"github.com/convergence-dev/convergence/pkg/events"
	"github.com/convergence-dev/convergence/pkg/events/consumer"
	"github.com/convergence-dev/convergence/services/converger/engine"
	"github.com/convergence-dev/convergence/services/converger/tasks"
)

// deadLetters consumes the converge requests the converger's consumer dead-lettered.
func (s *Service) deadLetters() *consumer.Consumer[events.ConvergeRequest] {
	return consumer.New(s.deps.JS, consumer.Config{
		Name:        events.ConsumerConvergerDeadLetters,
		Stream:      events.StreamDeadLetter,
		Subjects:    []string{events.DeadLetterSubject(events.ConsumerConverger)},
		Concurrency: 4,
		MaxDeliver:  s.cfg.MaxDeliver,
		AckWait:     s.cfg.AckWait,
	}, s.abandon, s.logger, nil)
}

// abandon ends the task of a converge request the converger gave up on: failed, with the
// usage of the turns its runs recorded, which its converge.failed event bills. Without it the
// task would stay queued or running for good, and the tokens it spent would never be billed.
// A task that has finished is left as it is.
func (s *Service) abandon(ctx context.Context, ev consumer.Event[events.ConvergeRequest]) error {
	id := ev.Data.TaskID
	if !taskspec.ValidID(id) {
		s.logger.Warn("dead-lettered converge request names no valid task; nothing to end", "event_id", ev.Envelope.ID)
		return nil
	}
	log := s.logger.With("task_id", id, "event_id", ev.Envelope.ID)
	// The claim fences off any run still going, and returns the turns recorded so far.
	c, err := s.store.Claim(ctx, ev.Data, ev.Envelope.RequestID)
	if errors.Is(err, tasks.ErrNotClaimable) {
		return nil
	}
	if err != nil {
		return err
	}
	// The engine counts the recorded turns exactly as a run does; its context is done, so it
	// calls nothing.
	done, cancel := context.WithCancel(ctx)
	cancel()
	res, err := s.engine.Run(done, c.Request.EngineTask(id), engine.Options{Resume: c.Turns})
	if err != nil && !errors.Is(err, engine.ErrInvalidResume) {
		return fmt.Errorf("count the recorded turns of %s: %w", id, err)
	}
	o := tasks.Outcome{
		Status: tasks.StatusFailed,
		Result: tasks.ResultOf(res, tasks.StopError),
		Error:  "the platform could not run the task and gave up on it; create it again",
	}
	if err := s.store.Finish(ctx, s.deps.Outbox, c, o); err != nil {
		if errors.Is(err, tasks.ErrFenced) {
			return nil // Another replica ended it first.
		}
		return err
	}
	if c.Request.WebhookURL != "" {
		s.deliverer.Wake()
	}
	s.publishProgress(tasks.Progress{TaskID: id, Kind: tasks.KindFinished, Status: string(o.Status)}, c.RequestID)
	s.observe(c, o)
	log.Error("task failed: its converge request was dead-lettered", "rounds", o.Result.Rounds, "total_tokens", o.Result.Usage.TotalTokens)
	return nil
}
