package tasks

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Writer group-commits the writes of many task runs: the turns and rounds that runs save at
// about the same time are sent to PostgreSQL as one batch, in one round trip and one
// transaction. A converger with a thousand tasks in flight, whose provider calls tend to
// return together, then commits a few batches instead of a thousand transactions, which is
// what keeps its database's CPU (and, with fsync on, its disk) from being the bottleneck.
//
// A write waits for no timer: the first write of a quiet moment goes out at once, alone; the
// writes that arrive while batches are in flight form the next batches. Each write returns
// only after its batch has committed, and a batch that fails fails every write in it, so a
// write never reports success for an effect that was rolled back.
type Writer struct {
	pool     *pgxpool.Pool
	ops      chan *op
	maxBatch int
	flushes  chan struct{}
	stopped  chan struct{} // closed when Run returns
}

// op is one statement of a batch and the caller waiting for it.
type op struct {
	sql  string
	args []any
	// scan reads the statement's result; it returns an error only for a failed statement.
	scan func(pgx.Rows) error
	done chan error
}

// NewWriter returns a writer on pool that sends batches of at most maxBatch statements, with
// at most parallel batches in flight. It starts nothing; Run does.
func NewWriter(pool *pgxpool.Pool, maxBatch, parallel int) *Writer {
	return &Writer{
		pool:     pool,
		ops:      make(chan *op),
		maxBatch: max(1, maxBatch),
		flushes:  make(chan struct{}, max(1, parallel)),
		stopped:  make(chan struct{}),
	}
}

// errWriterStopped is returned for writes made after Run returned.
var errWriterStopped = errors.New("task writer stopped")

// Run sends batches until ctx is done, then waits for the batches in flight and returns nil.
// Run once. Writes must stop before ctx is done (the converger stops its handlers first): a
// write that comes after Run returned fails with errWriterStopped.
func (w *Writer) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer close(w.stopped)
	defer wg.Wait()
	for {
		var first *op
		select {
		case first = <-w.ops:
		case <-ctx.Done():
			return nil
		}
		batch := []*op{first}
	gather:
		for len(batch) < w.maxBatch {
			select {
			case o := <-w.ops:
				batch = append(batch, o)
			default:
				break gather
			}
		}
		w.flushes <- struct{}{}
		wg.Go(func() {
			defer func() { <-w.flushes }()
			w.flush(context.WithoutCancel(ctx), batch)
		})
	}
}

func (w *Writer) flush(ctx context.Context, batch []*op) {
	b := &pgx.Batch{}
	for _, o := range batch {
		b.Queue(o.sql, o.args...).Query(o.scan)
	}
	err := w.pool.SendBatch(ctx, b).Close()
	if err != nil {
		err = fmt.Errorf("batch of %d writes: %w", len(batch), err)
	}
	for _, o := range batch {
		o.done <- err
	}
}

// do runs one statement in the next batch and waits until that batch has committed.
func (w *Writer) do(ctx context.Context, sql string, args []any, scan func(pgx.Rows) error) error {
	o := &op{sql: sql, args: args, scan: scan, done: make(chan error, 1)}
	select {
	case w.ops <- o:
	case <-ctx.Done():
		return ctx.Err()
	case <-w.stopped:
		return errWriterStopped
	}
	return <-o.done // The batch is bounded by its statements, not by ctx: wait for its verdict.
}

// exec runs sql, directly or through the writer when there is one, and returns the rows it
// affected.
func (s *Store) exec(ctx context.Context, sql string, args ...any) (int64, error) {
	if s.writer == nil {
		tag, err := s.pool.Exec(ctx, sql, args...)
		return tag.RowsAffected(), err
	}
	var n int64
	err := s.writer.do(ctx, sql, args, func(rows pgx.Rows) error {
		for rows.Next() {
		}
		if err := rows.Err(); err != nil {
			return err
		}
		n = rows.CommandTag().RowsAffected()
		return nil
	})
	return n, err
}

// queryRow runs sql, directly or through the writer, and scans its one row into dest; no row is
// pgx.ErrNoRows.
func (s *Store) queryRow(ctx context.Context, sql string, args []any, dest ...any) error {
	if s.writer == nil {
		return s.pool.QueryRow(ctx, sql, args...).Scan(dest...)
	}
	found := false
	err := s.writer.do(ctx, sql, args, func(rows pgx.Rows) error {
		defer rows.Close()
		if rows.Next() {
			found = true
			if err := rows.Scan(dest...); err != nil {
				return err
			}
		}
		return rows.Err()
	})
	if err == nil && !found {
		return pgx.ErrNoRows
	}
	return err
}
