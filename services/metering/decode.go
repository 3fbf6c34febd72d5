package metering

import (
	"fmt"

	"github.com/convergence-dev/convergence/pkg/events"
	"github.com/convergence-dev/convergence/pkg/events/consumer"
	"github.com/convergence-dev/convergence/services/metering/ledger"
)

// decodeResult turns a converge.completed or converge.failed event into the task usage the
// ledger records. An event the ledger cannot bill right is a permanent error.
func decodeResult(env events.Envelope) (ledger.TaskUsage, error) {
	var u ledger.TaskUsage
	switch env.Type {
	case events.TypeConvergeCompleted:
		e, err := events.DataAs[events.ConvergeCompleted](env)
		if err != nil {
			return u, consumer.Permanent(err)
		}
		score := e.ConvergenceScore
		u = ledger.TaskUsage{TaskID: e.TaskID, EnvID: e.EnvID, OrgID: e.OrgID, Score: &score,
			FinishedAt: e.FinishedAt, Agents: e.Agents, Usage: e.Usage}
	case events.TypeConvergeFailed:
		e, err := events.DataAs[events.ConvergeFailed](env)
		if err != nil {
			return u, consumer.Permanent(err)
		}
		u = ledger.TaskUsage{TaskID: e.TaskID, EnvID: e.EnvID, OrgID: e.OrgID, Failed: true,
			FinishedAt: e.FinishedAt, Agents: e.Agents, Usage: e.Usage}
	default:
		return u, consumer.Permanent(fmt.Errorf("event type %q is not a convergence result", env.Type))
	}
	u.EventID = env.ID
	if u.FinishedAt.IsZero() {
		u.FinishedAt = env.Time
	}
	if err := u.Validate(); err != nil {
		return u, consumer.Permanent(err)
	}
	return u, nil
}

// decodeLifecycle turns a tenant.lifecycle event into the fact the ledger records.
func decodeLifecycle(env events.Envelope) (ledger.LifecycleFact, error) {
	if env.Type != events.TypeTenantLifecycle {
		return ledger.LifecycleFact{}, consumer.Permanent(fmt.Errorf("event type %q is not a tenant lifecycle fact", env.Type))
	}
	e, err := events.DataAs[events.TenantLifecycle](env)
	if err != nil {
		return ledger.LifecycleFact{}, consumer.Permanent(err)
	}
	f := ledger.LifecycleFact{EventID: env.ID, EnvID: e.EnvID, OrgID: e.OrgID, State: e.State, At: e.At}
	if f.At.IsZero() {
		f.At = env.Time
	}
	if err := f.Validate(); err != nil {
		return f, consumer.Permanent(err)
	}
	return f, nil
}
