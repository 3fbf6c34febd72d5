package metering

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/convergence-dev/convergence/pkg/events"
)

// Usage events. The ledger is its own outbox: every row carries the id of the transaction that
// wrote it (migration 00020), and the publisher sends, in transaction order, the rows of the
// transactions below the database's snapshot horizon — all of them have ended, so none can
// still gain a row — as usage.recorded events, one per transaction and organization (split when
// large), then moves the cursor in usage_publication past them, in the transaction that read
// them. One replica publishes at a time (the cursor row's lock). A publish that fails leaves
// the cursor where it was; the events sent again carry the same Nats-Msg-Id, so JetStream keeps
// one of each within its duplicate window. Recording usage writes nothing twice for this.

// eventSource is the CloudEvents source of the metering's events.
const eventSource = "convergence/metering"

// publishEvery is how often the publisher looks for usage to send when no ingest wakes it.
const publishEvery = time.Second

// maxPublishRows bounds the ledger rows one publication reads; maxRecordsPerEvent the records
// of one event, which keeps an event far below JetStream's message size limit.
const (
	maxPublishRows     = 5000
	maxRecordsPerEvent = 500
)

// publishUsage sends usage.recorded events until ctx is done, whenever woken and every
// publishEvery.
func (s *Service) publishUsage(ctx context.Context) {
	t := time.NewTicker(publishEvery)
	defer t.Stop()
	for {
		for {
			n, err := s.publishOnce(ctx)
			if err != nil && ctx.Err() == nil {
				s.logger.Warn("publish usage events; retried", "err", err)
			}
			if err != nil || n < maxPublishRows {
				break // Caught up, or failing: wait for the next turn.
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-s.published:
		}
	}
}

// wakePublisher asks the publisher to look now (after a batch committed).
func (s *Service) wakePublisher() {
	select {
	case s.published <- struct{}{}:
	default:
	}
}

// publishedRow is a ledger row as a usage event carries it.
type publishedRow struct {
	xact, orgID, envID     int64
	eventID, kind, taskID  string
	occurredAt             time.Time
	line                   events.UsageLine
	priceVersion, currency string
}

// publishOnce publishes the ledger rows of ended transactions past the cursor, at most
// maxPublishRows (and always whole transactions), and says how many rows it read.
func (s *Service) publishOnce(ctx context.Context) (int, error) {
	read := 0
	err := pgx.BeginFunc(ctx, s.deps.Pool, func(tx pgx.Tx) error {
		var cursor, horizon int64
		// SKIP LOCKED: another replica publishing now has the row; this one waits its turn.
		err := tx.QueryRow(ctx, `SELECT xact, (pg_snapshot_xmin(pg_current_snapshot())::text)::bigint
			FROM usage_publication FOR UPDATE SKIP LOCKED`).Scan(&cursor, &horizon)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read the publication cursor: %w", err)
		}
		rows, err := tx.Query(ctx, `
			SELECT l.xact, l.org_id, l.env_id, l.event_id, l.kind, coalesce(l.task_id, ''), l.occurred_at, l.line,
				l.provider, l.model, l.agent, l.calls, l.input_tokens, l.output_tokens, l.cached_tokens, l.total_tokens,
				l.container_ms, l.cost_micros, v.label, v.currency
			FROM metering_ledger l JOIN metering_price_versions v ON v.id = l.price_version_id
			WHERE l.xact >= $1 AND l.xact < $2
			ORDER BY l.xact, l.org_id, l.event_id, l.line LIMIT $3`, cursor, horizon, maxPublishRows+1)
		if err != nil {
			return fmt.Errorf("read usage to publish: %w", err)
		}
		var got []publishedRow
		var r publishedRow
		var line int16
		_, err = pgx.ForEachRow(rows, []any{&r.xact, &r.orgID, &r.envID, &r.eventID, &r.kind, &r.taskID, &r.occurredAt, &line,
			&r.line.Provider, &r.line.Model, &r.line.Agent, &r.line.Calls, &r.line.InputTokens, &r.line.OutputTokens,
			&r.line.CachedTokens, &r.line.TotalTokens, &r.line.ContainerMS, &r.line.CostMicros, &r.priceVersion, &r.currency}, func() error {
			row := r
			row.line.Line = int(line)
			if r.line.CostMicros != nil {
				cost := *r.line.CostMicros
				row.line.CostMicros = &cost
			}
			got = append(got, row)
			return nil
		})
		if err != nil {
			return fmt.Errorf("read usage to publish: %w", err)
		}
		read = len(got)
		next := horizon
		if len(got) > maxPublishRows {
			// A full page: publish whole transactions only, up to the last one the page began.
			last := got[len(got)-1].xact
			for len(got) > 0 && got[len(got)-1].xact == last {
				got = got[:len(got)-1]
			}
			if len(got) == 0 {
				return fmt.Errorf("transaction %d wrote more than %d ledger rows; raise maxPublishRows", last, maxPublishRows)
			}
			next = last
		}
		if err := s.sendUsage(ctx, got); err != nil {
			return err
		}
		if next > cursor {
			if _, err := tx.Exec(ctx, `UPDATE usage_publication SET xact = $1`, next); err != nil {
				return fmt.Errorf("move the publication cursor: %w", err)
			}
		}
		return nil
	})
	return read, err
}

// sendUsage publishes rows, in order, as events: one per transaction and organization, split
// every maxRecordsPerEvent records, each with a Nats-Msg-Id made of what it holds, so that a
// repeat is dropped.
func (s *Service) sendUsage(ctx context.Context, rows []publishedRow) error {
	var futures []jetstream.PubAckFuture
	for i := 0; i < len(rows); {
		first := rows[i]
		ev := events.UsageRecorded{OrgID: first.orgID, Currency: first.currency, PriceVersion: first.priceVersion}
		j := i
		for j < len(rows) && rows[j].xact == first.xact && rows[j].orgID == first.orgID {
			r := rows[j]
			if n := len(ev.Records); n > 0 && ev.Records[n-1].SourceEventID == r.eventID {
				ev.Records[n-1].Lines = append(ev.Records[n-1].Lines, r.line)
			} else if n == maxRecordsPerEvent {
				break
			} else {
				ev.Records = append(ev.Records, events.UsageRecord{SourceEventID: r.eventID, Kind: r.kind, EnvID: r.envID,
					TaskID: r.taskID, OccurredAt: r.occurredAt.UTC(), Lines: []events.UsageLine{r.line}})
			}
			j++
		}
		id := "usage-" + strconv.FormatInt(first.xact, 10) + "-" + strconv.FormatInt(first.orgID, 10) + "-" + ev.Records[0].SourceEventID
		env, err := events.NewEnvelope(eventSource, events.TypeUsageRecorded, strconv.FormatInt(first.orgID, 10), "", ev)
		if err != nil {
			return err
		}
		env.ID = id // made of what the event holds, so that a repeat is dropped
		data, err := env.Encode()
		if err != nil {
			return err
		}
		msg := &nats.Msg{Subject: events.UsageRecordedSubject(first.orgID), Data: data, Header: nats.Header{}}
		msg.Header.Set(jetstream.MsgIDHeader, id)
		f, err := s.deps.JS.PublishMsgAsync(msg)
		if err != nil {
			return fmt.Errorf("publish usage: %w", err)
		}
		futures = append(futures, f)
		i = j
	}
	for _, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return fmt.Errorf("publish usage: %w", err)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}
