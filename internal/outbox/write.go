package outbox

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/convergence-dev/convergence/pkg/events"
)

// Write records env, to be published on subject, inside tx. The event becomes visible to the
// relay when tx commits and is dropped with it when tx rolls back. Prefer Outbox.Tx, which
// sends the event's INSERT with its COMMIT and wakes the process's relay after it; an event
// written in another transaction is inserted at once and found by the relay's next poll.
func Write(ctx context.Context, tx pgx.Tx, subject string, env events.Envelope) error {
	row, err := NewRow(ctx, subject, env)
	if err != nil {
		return err
	}
	if etx, ok := tx.(*eventTx); ok {
		etx.rows = append(etx.rows, row)
		return nil
	}
	if _, err := tx.Exec(ctx, insertEvent, row.EventID, row.Subject, row.Payload); err != nil {
		return fmt.Errorf("insert outbox event %s: %w", env.ID, err)
	}
	return nil
}

const insertEvent = `INSERT INTO outbox (event_id, subject, payload) VALUES ($1, $2, $3)`

// Row is an event as the columns of its outbox row, for a statement that inserts the row
// itself, as part of the change it records: INSERT INTO outbox (event_id, subject, payload).
// Such a writer wakes the relay (Outbox.Wake) once the statement has committed.
type Row struct {
	EventID, Subject string
	Payload          []byte
}

// NewRow checks env and returns its outbox row on subject, with the span of ctx, if any, as
// the event's trace context.
func NewRow(ctx context.Context, subject string, env events.Envelope) (Row, error) {
	env.InjectTrace(ctx)
	if err := env.Validate(); err != nil {
		return Row{}, fmt.Errorf("outbox event: %w", err)
	}
	payload, err := env.Encode()
	if err != nil {
		return Row{}, fmt.Errorf("encode outbox event: %w", err)
	}
	return Row{EventID: env.ID, Subject: subject, Payload: payload}, nil
}

// Outbox runs transactions that write events and wakes the relay of this process when they
// commit. Every process that writes events runs a relay, so an in-process wake-up reaches a
// relay at once; the relay's poll covers rows left by a process that died before relaying.
//
// PostgreSQL's NOTIFY would wake relays in other processes too, but a notifying transaction
// holds a database-wide lock through its commit, which serializes the commits of every writer
// and defeats group commit.
type Outbox struct {
	pool *pgxpool.Pool
	wake chan struct{}
}

// New returns an Outbox on pool. Pass it to NewRelay so its commits wake that relay.
func New(pool *pgxpool.Pool) *Outbox {
	return &Outbox{pool: pool, wake: make(chan struct{}, 1)}
}

// Tx runs fn in a transaction and commits it if fn returns nil, then wakes the relay. fn
// writes the domain change and its events (Write) with the transaction it is given.
//
// The events' INSERTs are held until fn returns and go with the COMMIT, pipelined in one round
// trip: a transaction costs its BEGIN, fn's own statements and that one. A failing INSERT
// (an event ID already taken) aborts the transaction, so the server skips the COMMIT and Tx
// rolls the change back; the change and its events commit together or not at all, as before.
func (o *Outbox) Tx(ctx context.Context, fn func(tx pgx.Tx) error) error {
	conn, err := o.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("outbox transaction: %w", err)
	}
	// A connection left in a transaction, if the rollback below fails, is closed on release.
	defer conn.Release()
	tx, err := conn.Begin(ctx)
	if err != nil {
		return fmt.Errorf("outbox transaction: %w", err)
	}
	committed := false
	defer func() {
		if !committed {
			_ = tx.Rollback(context.WithoutCancel(ctx))
		}
	}()
	etx := &eventTx{Tx: tx}
	if err := fn(etx); err != nil {
		return err
	}
	commit := &pgx.Batch{}
	for _, row := range etx.rows {
		commit.Queue(insertEvent, row.EventID, row.Subject, row.Payload)
	}
	commit.Queue(`COMMIT`)
	if err := conn.SendBatch(ctx, commit).Close(); err != nil {
		return fmt.Errorf("commit outbox transaction: %w", err)
	}
	committed = true
	o.Wake()
	return nil
}

// eventTx is the transaction Outbox.Tx hands its function: Write keeps its events for the
// COMMIT. Savepoints (Begin) are the plain pgx ones; an event written in one is inserted at
// once, and rolled back with it.
type eventTx struct {
	pgx.Tx
	rows []Row
}

// Batch sends b — the statements of one domain change — with the INSERT of env appended, in
// one round trip, and wakes the relay. PostgreSQL runs the statements of a pipelined batch as
// one implicit transaction, so the change and its event commit together or not at all. It
// suits changes that need no reads between statements; the rest use Tx.
func (o *Outbox) Batch(ctx context.Context, b *pgx.Batch, subject string, env events.Envelope) error {
	row, err := NewRow(ctx, subject, env)
	if err != nil {
		return err
	}
	b.Queue(insertEvent, row.EventID, row.Subject, row.Payload)
	if err := o.pool.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("outbox batch: %w", err)
	}
	o.Wake()
	return nil
}

// Wake tells the relay that events were committed. It never blocks.
func (o *Outbox) Wake() {
	select {
	case o.wake <- struct{}{}:
	default: // A wake-up is already pending; the batch it starts will include these rows.
	}
}
