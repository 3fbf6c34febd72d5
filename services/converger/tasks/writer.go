package tasks

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Writer group-commits the writes of many task runs: the turns and rounds that runs save at
// about the same time are sent to PostgreSQL as one batch, in one round trip and one
// transaction, with the rounds of many runs in each statement. A converger with a thousand
// tasks in flight, whose provider calls tend to return together, then commits a few batches
// instead of a thousand transactions, which is what keeps its database's CPU (and, with fsync
// on, its disk) from being the bottleneck.
//
// A write waits for no timer: the first write of a quiet moment goes out at once, alone; the
// writes that arrive while batches are in flight form the next batches. Each write returns
// only after its batch has committed, and a batch that fails fails every write in it, so a
// write never reports success for an effect that was rolled back.
type Writer struct {
	pool     *pgxpool.Pool
	maxBatch int
	timeout  time.Duration // of one batch, from taking a connection to its commit
	flushes  chan struct{}
	ready    chan struct{} // holds a token while writes are queued

	mu      sync.Mutex
	queue   []*op
	stopped bool // set when Run returns: writes fail from then on
}

// op is one statement of a batch and what to do with its outcome.
type op struct {
	sql  string
	args []any
	// prepare, if set, returns the arguments instead, when the batch is built: a run's
	// documents are encoded on the writer's goroutines, so that the runs' own goroutines, ten
	// thousand of them waiting on their providers, never grow their stacks to encode JSON.
	prepare func() ([]any, error)
	// round, if set, makes the op a round write instead of a statement of its own: the batch
	// records all its rounds in one statement (saveRounds).
	round *roundWrite
	// scan reads the statement's result; it returns an error only for a failed statement.
	scan func(pgx.Rows) error
	// done is called once with the batch's verdict, on the goroutine that sent the batch.
	done func(error)
}

// NewWriter returns a writer on pool that sends batches of at most maxBatch writes, with
// at most parallel batches in flight. It starts nothing; Run does.
func NewWriter(pool *pgxpool.Pool, maxBatch, parallel int) *Writer {
	return &Writer{
		pool:     pool,
		maxBatch: max(1, maxBatch),
		timeout:  batchTimeout,
		flushes:  make(chan struct{}, max(1, parallel)),
		ready:    make(chan struct{}, 1),
	}
}

// roundsPerStatement is how many rounds one statement records at most. A statement's
// arguments are encoded into one buffer that grows by doubling from a few hundred bytes (pgx
// keeps none larger between statements); rounds of about 5 KB each, 16 to a statement, keep
// that copying small while the statements of a batch stay few.
const roundsPerStatement = 16

// batchTimeout bounds a batch: a database that stops answering fails its writes, and their runs
// resume on redelivery, instead of holding them forever. A batch that committed as it timed
// out is found by the next claim, which resumes from what it wrote.
const batchTimeout = 30 * time.Second

// errWriterStopped is returned for writes made after Run returned.
var errWriterStopped = errors.New("task writer stopped")

// Run sends batches until ctx is done, then waits for the batches in flight, fails the writes
// still queued and returns nil. Run once. Writes must stop before ctx is done (the converger
// stops its handlers first): a write that comes after Run returned fails with
// errWriterStopped.
func (w *Writer) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer w.stop()
	defer wg.Wait()
	for ctx.Err() == nil {
		select {
		case <-w.ready:
		case <-ctx.Done():
			return nil
		}
		// A batch takes what queued while the batches before it were in flight.
		for {
			select {
			case w.flushes <- struct{}{}:
			case <-ctx.Done():
				return nil
			}
			batch := w.take()
			if len(batch) == 0 {
				<-w.flushes
				break
			}
			wg.Go(func() {
				defer func() { <-w.flushes }()
				w.flush(context.WithoutCancel(ctx), batch)
			})
		}
	}
	return nil
}

// take removes up to maxBatch writes from the queue.
func (w *Writer) take() []*op {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := min(len(w.queue), w.maxBatch)
	batch := w.queue[:n:n]
	w.queue = w.queue[n:]
	if len(w.queue) == 0 {
		w.queue = nil // Let the array of a burst go.
	}
	return batch
}

// stop fails the writes left in the queue and every write from now on.
func (w *Writer) stop() {
	w.mu.Lock()
	left := w.queue
	w.queue, w.stopped = nil, true
	w.mu.Unlock()
	for _, o := range left {
		o.done(errWriterStopped)
	}
}

func (w *Writer) flush(ctx context.Context, batch []*op) {
	b := &pgx.Batch{}
	queued := make([]*op, 0, len(batch))
	var roundOps []*op
	for _, o := range batch {
		if o.round != nil {
			roundOps = append(roundOps, o)
			continue
		}
		args := o.args
		if o.prepare != nil {
			var err error
			if args, err = o.prepare(); err != nil {
				o.done(err) // Nothing of it is sent; the batch goes on without it.
				continue
			}
		}
		b.Queue(o.sql, args...).Query(o.scan)
		queued = append(queued, o)
	}
	for chunk := range slices.Chunk(roundOps, roundsPerStatement) {
		rounds := make([]*roundWrite, len(chunk))
		for i, o := range chunk {
			rounds[i] = o.round
		}
		if sql, args, scan := saveRounds(rounds); len(args) > 0 {
			b.Queue(sql, args...).Query(scan)
		}
		for _, o := range chunk {
			if o.round.err != nil {
				o.done(o.round.err) // Not encoded, so not sent.
				continue
			}
			queued = append(queued, o)
		}
	}
	if len(queued) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, w.timeout)
	defer cancel()
	err := w.pool.SendBatch(ctx, b).Close()
	if err != nil {
		err = fmt.Errorf("batch of %d writes: %w", len(queued), err)
	}
	for _, o := range queued {
		o.done(err)
	}
}

// start queues o for the next batch and returns at once; o.done gets the verdict of its batch
// once that has committed or failed. A batch is bounded by batchTimeout, not by its writers'
// contexts: once queued, a write is sent.
func (w *Writer) start(o *op) {
	w.mu.Lock()
	if w.stopped {
		w.mu.Unlock()
		o.done(errWriterStopped)
		return
	}
	w.queue = append(w.queue, o)
	w.mu.Unlock()
	select {
	case w.ready <- struct{}{}:
	default: // Run is woken already; it takes this write with the others.
	}
}

// exec runs sql, directly or through the writer when there is one, with the arguments that
// prepare returns (on the writer's goroutine, through the writer), and returns the rows it
// affected.
func (s *Store) exec(ctx context.Context, sql string, prepare func() ([]any, error)) (int64, error) {
	if s.writer == nil {
		args, err := prepare()
		if err != nil {
			return 0, err
		}
		tag, err := s.pool.Exec(ctx, sql, args...)
		return tag.RowsAffected(), err
	}
	var n int64
	verdict := make(chan error, 1)
	s.writer.start(&op{sql: sql, prepare: prepare, scan: func(rows pgx.Rows) error {
		for rows.Next() {
		}
		if err := rows.Err(); err != nil {
			return err
		}
		n = rows.CommandTag().RowsAffected()
		return nil
	}, done: func(err error) { verdict <- err }})
	return n, <-verdict
}

// queryRow runs sql, directly or through the writer, and scans its one row into dest; no row is
// pgx.ErrNoRows.
func (s *Store) queryRow(ctx context.Context, sql string, args []any, dest ...any) error {
	if s.writer == nil {
		return s.pool.QueryRow(ctx, sql, args...).Scan(dest...)
	}
	found := false
	verdict := make(chan error, 1)
	s.writer.start(&op{sql: sql, args: args, scan: func(rows pgx.Rows) error {
		defer rows.Close()
		if rows.Next() {
			found = true
			if err := rows.Scan(dest...); err != nil {
				return err
			}
		}
		return rows.Err()
	}, done: func(err error) { verdict <- err }})
	if err := <-verdict; err != nil {
		return err
	}
	if !found {
		return pgx.ErrNoRows
	}
	return nil
}
