package metering

import (
	"context"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/convergence-dev/convergence/internal/natsrpc"
	"github.com/convergence-dev/convergence/pkg/events"
)

// convergerRecords reads the converger's records of finished tasks on the bus, for a
// reconciliation (ledger.TaskRecords).
type convergerRecords struct {
	nc *nats.Conn
}

func (c convergerRecords) Finished(ctx context.Context, from, end time.Time, page func([]events.FinishedTask) error) error {
	q := events.FinishedTasksQuery{From: from, To: end, Limit: events.MaxPage}
	for {
		ans, err := natsrpc.Call[events.FinishedTasksQuery, events.FinishedTasks](ctx, c.nc, events.SubjectTasksFinished, q)
		if err != nil {
			return err
		}
		if err := page(ans.Tasks); err != nil {
			return err
		}
		if !ans.More || len(ans.Tasks) == 0 {
			return nil
		}
		last := ans.Tasks[len(ans.Tasks)-1]
		q.AfterFinishedAt, q.AfterTaskID = last.FinishedAt, last.TaskID
	}
}

func (c convergerRecords) Known(ctx context.Context, ids []string) ([]string, error) {
	ans, err := natsrpc.Call[events.KnownTasksQuery, events.KnownTasks](ctx, c.nc, events.SubjectTasksKnown, events.KnownTasksQuery{TaskIDs: ids})
	return ans.TaskIDs, err
}
