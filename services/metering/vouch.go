package metering

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/convergence-dev/convergence/internal/natsrpc"
	"github.com/convergence-dev/convergence/pkg/events"
	"github.com/convergence-dev/convergence/services/metering/ledger"
)

// Why a result is refused: the converger has no such task, or its record names another
// tenant, shows the task unfinished, ended otherwise, or with other usage.
const (
	refusedUnknownTask    = "unknown_task"
	refusedForeignTask    = "foreign_task"
	refusedUnfinished     = "unfinished_task"
	refusedStatusMismatch = "status_mismatch"
	refusedUsageMismatch  = "usage_mismatch"
)

func refusalReasons() []string {
	return []string{refusedUnknownTask, refusedForeignTask, refusedUnfinished, refusedStatusMismatch, refusedUsageMismatch}
}

// vouched returns the results of batch that the converger's task records vouch for: a task it
// recorded, for the tenant and organization the result names, finished as the result says,
// with the same usage. Only the converger's NATS user may publish results, so a refusal means
// a forged or garbled result, or one published by someone holding another identity it should
// not; each is counted by reason, logged, and never billed (its message is acknowledged).
// When the converger does not answer, the batch is left for a later delivery, not billed
// unchecked.
func (s *Service) vouched(ctx context.Context, batch []ledger.TaskUsage) ([]ledger.TaskUsage, error) {
	records := make(map[string]events.FinishedTask, len(batch))
	for page := range slices.Chunk(batch, events.MaxPage) {
		ids := make([]string, 0, len(page))
		for _, u := range page {
			// An ID no database column can hold names no recorded task: not worth asking.
			if utf8.ValidString(u.TaskID) && !strings.ContainsRune(u.TaskID, 0) {
				ids = append(ids, u.TaskID)
			}
		}
		ans, err := natsrpc.Call[events.KnownTasksQuery, events.KnownTasks](ctx, s.deps.NC, events.SubjectTasksKnown, events.KnownTasksQuery{TaskIDs: ids})
		if err != nil {
			return nil, fmt.Errorf("ask the converger for the records of %d results: %w", len(ids), err)
		}
		for _, r := range ans.Records {
			records[r.TaskID] = r
		}
	}
	kept := make([]ledger.TaskUsage, 0, len(batch))
	for _, u := range batch {
		r, known := records[u.TaskID]
		reason := ""
		switch {
		case !known:
			reason = refusedUnknownTask
		case r.EnvID != u.EnvID || r.OrgID != u.OrgID:
			reason = refusedForeignTask
		case r.Status != "completed" && r.Status != "failed" && r.Status != "cancelled":
			reason = refusedUnfinished
		case u.Failed == (r.Status == "completed"):
			reason = refusedStatusMismatch
		case r.Usage != u.Usage:
			reason = refusedUsageMismatch
		}
		if reason == "" {
			kept = append(kept, u)
			continue
		}
		s.metrics.refused.WithLabelValues(reason).Inc()
		s.metrics.events.WithLabelValues("results", outcomeRefused).Inc()
		s.logger.WarnContext(ctx, "result refused: the converger's record does not vouch for it; not billed",
			"reason", reason, "task_id", u.TaskID, "event_id", u.EventID, "env_id", u.EnvID, "org_id", u.OrgID)
	}
	return kept, nil
}
