package metering

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/convergence-dev/convergence/pkg/events/consumer"
	"github.com/convergence-dev/convergence/services/metering/ledger"
)

// ingest is the batch handler of a source (results, lifecycle): it records the batch's values
// in one ledger transaction and counts what that did. See the package documentation for how
// failures are handled.
func ingest[T any](s *Service, source string, record func(context.Context, []T) (ledger.Result, error), recorded func(ledger.Result)) consumer.BatchHandler[T] {
	return func(ctx context.Context, batch []consumer.Event[T]) error {
		values := make([]T, len(batch))
		for i, e := range batch {
			values[i] = e.Data
		}
		res, err := record(ctx, values)
		if err != nil {
			if dataError(err) {
				return consumer.Permanent(err)
			}
			return err
		}
		if res.Recorded > 0 {
			s.wakePublisher()
		}
		s.metrics.events.WithLabelValues(source, outcomeRecorded).Add(float64(res.Recorded))
		s.metrics.events.WithLabelValues(source, outcomeDuplicate).Add(float64(res.Duplicates))
		s.metrics.events.WithLabelValues(source, outcomeConflict).Add(float64(len(res.Conflicts)))
		s.metrics.lines.WithLabelValues(source).Add(float64(res.Lines))
		for _, c := range res.Conflicts {
			s.logger.Warn("task already counted under another event; not counted again", "event_id", c.EventID, "task_id", c.TaskID)
		}
		if recorded != nil {
			recorded(res)
		}
		if s.hooks.afterCommit != nil {
			ids, deliveries := make([]string, len(batch)), make([]uint64, len(batch))
			for i, e := range batch {
				ids[i], deliveries[i] = e.Envelope.ID, e.Delivery
			}
			if !s.hooks.afterCommit(source, ids, deliveries) {
				return consumer.ErrLeaveForRedelivery
			}
		}
		return nil // The acknowledgements follow; a lost one is harmless, as the redelivery finds the event's key.
	}
}

// dataError reports whether err is a PostgreSQL data exception (class 22) or integrity
// violation (class 23): the events' fault, which retrying cannot mend. Anything else (the
// database down, a deadlock, a missing migration) is retried.
func dataError(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && len(pgErr.Code) == 5 {
		switch pgErr.Code[:2] {
		case "22", "23":
			return true
		}
	}
	return false
}

// ingestObserver turns what the batch consumer of a source reports into the metering's metrics.
type ingestObserver struct {
	m      *metrics
	source string
}

func (o ingestObserver) Observe(_, outcome string, n int, took time.Duration) {
	switch outcome {
	case consumer.OutcomeRetried:
		o.m.events.WithLabelValues(o.source, outcomeRetried).Add(float64(n))
	case consumer.OutcomeDeadLettered:
		o.m.events.WithLabelValues(o.source, outcomeDeadLettered).Add(float64(n))
	case consumer.OutcomeHeld:
		o.m.writeRetries.WithLabelValues(o.source).Inc()
	case consumer.OutcomeBatch:
		o.m.batchMessages.WithLabelValues(o.source).Observe(float64(n))
		o.m.batchDuration.WithLabelValues(o.source).Observe(took.Seconds())
	}
}
