package tasks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/convergence-dev/convergence/internal/outbox"
	"github.com/convergence-dev/convergence/pkg/api"
	"github.com/convergence-dev/convergence/pkg/events"
	"github.com/convergence-dev/convergence/services/converger/engine"
	"github.com/convergence-dev/convergence/services/converger/webhook"
)

// Errors of the store.
var (
	// ErrNotFound: no such task, or not the tenant's.
	ErrNotFound = errors.New("task not found")
	// ErrNotClaimable: the task has finished (or does not exist), so there is nothing to run.
	ErrNotClaimable = errors.New("task is not claimable")
	// ErrFenced: a later run has claimed the task; the caller's run must stop without writing.
	ErrFenced = errors.New("task was claimed by a later run")
)

// Event sources of the events the store writes.
const (
	SourceConverger = "convergence/converger"
)

// Store reads and writes tasks on one database. It is safe for concurrent use.
type Store struct {
	pool    *pgxpool.Pool
	secrets *webhook.Secrets // the tenants' webhook signing secrets, made with their first webhook
	writer  *Writer          // nil: every write is its own transaction
}

// NewStore returns a Store on pool.
func NewStore(pool *pgxpool.Pool, secrets *webhook.Secrets) *Store {
	return &Store{pool: pool, secrets: secrets}
}

// GroupCommit returns a Store that sends SaveTurn and SaveRound through w, so that the writes
// of concurrent runs share batches. w must run (Writer.Run) for as long as they are called.
func (s *Store) GroupCommit(w *Writer) *Store {
	c := *s
	c.writer = w
	return &c
}

// Accept records the task a converge.request asks for as queued, unless it is recorded already,
// and gives its tenant a webhook secret if it names a webhook URL and has none, in one round
// trip. It is idempotent: a redelivered request, or one whose task a cancel recorded first,
// changes nothing.
func (s *Store) Accept(ctx context.Context, e events.ConvergeRequest, requestID string) error {
	req, err := json.Marshal(RequestOfEvent(e))
	if err != nil {
		return fmt.Errorf("encode request: %w", err)
	}
	b := &pgx.Batch{}
	b.Queue(`
		INSERT INTO convergence_tasks (id, env_id, org_id, type, status, request, request_id)
		VALUES ($1, $2, $3, $4, 'queued', $5, NULLIF($6, ''))
		ON CONFLICT (id) DO NOTHING`,
		e.TaskID, e.EnvID, e.OrgID, e.Type, req, requestID)
	if e.WebhookURL != "" {
		s.secrets.Queue(b, e.EnvID)
	}
	if err := s.pool.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("accept task %s: %w", e.TaskID, err)
	}
	return nil
}

// Record is a task as stored.
type Record struct {
	ID              string
	EnvID, OrgID    int64
	Type            string
	Status          Status
	Request         Request
	Result          *api.Result
	Rounds          int
	Usage           events.Usage
	Error           string
	RequestID       string
	CancelRequested bool
	CreatedAt       time.Time
	StartedAt       *time.Time
	FinishedAt      *time.Time
	Webhook         *api.TaskWebhook
}

// View is the record as the API shows it, with rounds (the stored round views, oldest first)
// as its transcript.
func (r Record) View(rounds []api.Round) api.Task {
	t := api.Task{
		TaskID:          r.ID,
		Status:          api.TaskStatus(r.Status),
		Type:            r.Type,
		AgentARole:      r.Request.AgentARole,
		AgentBRole:      r.Request.AgentBRole,
		MaxRounds:       r.Request.MaxRounds,
		Model:           r.Request.Model,
		RoundsCompleted: r.Rounds,
		Usage:           APIUsage(r.Usage),
		Rounds:          rounds,
		Error:           r.Error,
		CancelRequested: r.CancelRequested && !r.Status.Finished(),
		WebhookURL:      r.Request.WebhookURL,
		RequestID:       r.RequestID,
		CreatedAt:       r.CreatedAt,
	}
	if r.Result != nil {
		t.Result = *r.Result
	}
	if r.Webhook != nil {
		t.Webhook = *r.Webhook
	}
	if r.StartedAt != nil {
		t.StartedAt = *r.StartedAt
	}
	if r.FinishedAt != nil {
		t.FinishedAt = *r.FinishedAt
	}
	return t
}

// Get returns tenant envID's task id, or ErrNotFound. While the task runs, its usage is the
// sum of its persisted turns; once it has finished, the exact total recorded with its result.
func (s *Store) Get(ctx context.Context, envID int64, id string) (Record, error) {
	var r Record
	var req, result []byte
	var w struct {
		id, status  *string
		attempts    *int
		code        *int
		lastErr     *string
		deliveredAt *time.Time
	}
	var errText, requestID *string
	err := s.pool.QueryRow(ctx, `
		SELECT t.id, t.env_id, t.org_id, t.type, t.status, t.request, t.result,
			CASE WHEN t.finished_at IS NULL THEN coalesce(u.rounds, 0) ELSE t.rounds END,
			CASE WHEN t.finished_at IS NULL THEN coalesce(u.input_tokens, 0) ELSE t.input_tokens END,
			CASE WHEN t.finished_at IS NULL THEN coalesce(u.output_tokens, 0) ELSE t.output_tokens END,
			CASE WHEN t.finished_at IS NULL THEN coalesce(u.cached_tokens, 0) ELSE t.cached_tokens END,
			t.error, t.request_id, t.cancel_requested_at IS NOT NULL, t.created_at, t.started_at, t.finished_at,
			w.id, w.status, w.attempts, w.last_status_code, w.last_error, w.delivered_at
		FROM convergence_tasks t
		LEFT JOIN LATERAL (
			SELECT sum(input_tokens)::int8 AS input_tokens, sum(output_tokens)::int8 AS output_tokens,
				sum(cached_tokens)::int8 AS cached_tokens, max(round) FILTER (WHERE agent = 'B')::int AS rounds
			FROM convergence_turns WHERE task_id = t.id AND t.finished_at IS NULL
		) u ON true
		LEFT JOIN webhook_deliveries w ON w.task_id = t.id
		WHERE t.id = $1 AND t.env_id = $2`, id, envID).Scan(
		&r.ID, &r.EnvID, &r.OrgID, &r.Type, &r.Status, &req, &result, &r.Rounds,
		&r.Usage.InputTokens, &r.Usage.OutputTokens, &r.Usage.CachedTokens,
		&errText, &requestID, &r.CancelRequested, &r.CreatedAt, &r.StartedAt, &r.FinishedAt,
		&w.id, &w.status, &w.attempts, &w.code, &w.lastErr, &w.deliveredAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return Record{}, ErrNotFound
	}
	if err != nil {
		return Record{}, fmt.Errorf("read task %s: %w", id, err)
	}
	r.Usage.TotalTokens = r.Usage.InputTokens + r.Usage.OutputTokens
	r.Error, r.RequestID = deref(errText), deref(requestID)
	if err := json.Unmarshal(req, &r.Request); err != nil {
		return Record{}, fmt.Errorf("decode task %s request: %w", id, err)
	}
	if result != nil {
		r.Result = new(api.Result)
		if err := json.Unmarshal(result, r.Result); err != nil {
			return Record{}, fmt.Errorf("decode task %s result: %w", id, err)
		}
	}
	if w.id != nil {
		r.Webhook = &api.TaskWebhook{DeliveryID: *w.id, Status: api.TaskWebhookStatus(deref(w.status)), LastError: deref(w.lastErr), DeliveredAt: deref(w.deliveredAt)}
		if w.attempts != nil {
			r.Webhook.Attempts = *w.attempts
		}
		if w.code != nil {
			r.Webhook.LastStatusCode = *w.code
		}
	}
	return r, nil
}

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

// StoredRound is a round view as stored, with its number.
type StoredRound struct {
	Number int
	View   json.RawMessage
}

// Rounds returns the stored round views of task id numbered above after, in order. The
// caller checks that the task is the tenant's first (Get).
func (s *Store) Rounds(ctx context.Context, id string, after int) ([]StoredRound, error) {
	rows, err := s.pool.Query(ctx, `
		SELECT number, round FROM convergence_rounds WHERE task_id = $1 AND number > $2 ORDER BY number`, id, after)
	if err != nil {
		return nil, fmt.Errorf("read rounds of %s: %w", id, err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (StoredRound, error) {
		var sr StoredRound
		err := r.Scan(&sr.Number, &sr.View)
		return sr, err
	})
	if err != nil {
		return nil, fmt.Errorf("read rounds of %s: %w", id, err)
	}
	return out, nil
}

// Views returns the views of rounds, for View.
func Views(rounds []StoredRound) ([]api.Round, error) {
	out := make([]api.Round, len(rounds))
	for i, r := range rounds {
		if err := json.Unmarshal(r.View, &out[i]); err != nil {
			return nil, fmt.Errorf("decode round %d: %w", r.Number, err)
		}
	}
	return out, nil
}

// Claim is a converger's hold on a running task: the fencing token of its run, the request,
// and the turns persisted by earlier runs, to resume from.
type Claim struct {
	TaskID          string
	Run             int
	EnvID, OrgID    int64
	Request         Request
	RequestID       string
	CreatedAt       time.Time
	StartedAt       time.Time
	CancelRequested bool
	// Turns are the persisted turns in the order the engine resumes from.
	Turns []engine.Turn
}

// Claim records the task a converge.request asks for as running, unless it is recorded
// already; moves a queued one to running; or takes a running one over from a run that lost it
// (its converger died, or its message was redelivered). It returns the claim with the next run
// number, in one statement that also reads the turns the run resumes from. A finished task,
// or one of a destroyed tenant, returns ErrNotClaimable: its provider calls are not made
// (again). A task that names a webhook URL makes sure its tenant has a webhook secret.
func (s *Store) Claim(ctx context.Context, e events.ConvergeRequest, requestID string) (Claim, error) {
	id := e.TaskID
	c := Claim{TaskID: id}
	request, err := json.Marshal(RequestOfEvent(e))
	if err != nil {
		return Claim{}, fmt.Errorf("encode request: %w", err)
	}
	var req, turns []byte
	var storedRequestID *string
	err = s.queryRow(ctx, `
		INSERT INTO convergence_tasks AS t (id, env_id, org_id, type, status, request, request_id, run, started_at)
		SELECT $1, $2, $3, $4, 'running', $5, NULLIF($6, ''), 1, now()
		WHERE NOT EXISTS (SELECT 1 FROM destroyed_tenants WHERE env_id = $2)
		ON CONFLICT (id) DO UPDATE SET status = 'running', run = t.run + 1,
			started_at = coalesce(t.started_at, now()), updated_at = now()
		WHERE t.status IN ('queued', 'running') AND NOT EXISTS (SELECT 1 FROM destroyed_tenants WHERE env_id = t.env_id)
		RETURNING run, env_id, org_id, request, request_id, created_at, started_at, cancel_requested_at IS NOT NULL,
			(SELECT coalesce(json_agg(turn ORDER BY seq), '[]') FROM convergence_turns WHERE task_id = $1)`,
		[]any{id, e.EnvID, e.OrgID, e.Type, request, requestID},
		&c.Run, &c.EnvID, &c.OrgID, &req, &storedRequestID, &c.CreatedAt, &c.StartedAt, &c.CancelRequested, &turns)
	if errors.Is(err, pgx.ErrNoRows) {
		return Claim{}, ErrNotClaimable
	}
	if err != nil {
		return Claim{}, fmt.Errorf("claim task %s: %w", id, err)
	}
	c.RequestID = deref(storedRequestID)
	if err := json.Unmarshal(req, &c.Request); err != nil {
		return Claim{}, fmt.Errorf("decode task %s request: %w", id, err)
	}
	if err := json.Unmarshal(turns, &c.Turns); err != nil {
		return Claim{}, fmt.Errorf("decode task %s turns: %w", id, err)
	}
	if c.Request.WebhookURL != "" {
		if _, err := s.secrets.Ensure(ctx, s.pool, c.EnvID); err != nil {
			return Claim{}, err
		}
	}
	return c, nil
}

// turnSeq is a turn's position in the resume order: A1, B1, A2, B2, ..., synthesis.
func turnSeq(t engine.Turn) int {
	switch t.Agent {
	case engine.AgentA:
		return 2 * (t.Round - 1)
	case engine.AgentB:
		return 2*(t.Round-1) + 1
	default:
		return 2 * t.Round
	}
}

// turnRows are turns as the columns of their convergence_turns rows: arrays that the
// statements inserting them unnest, so that any number of turns go in one statement.
type turnRows struct {
	seq, round            []int32
	agent, turn           []string
	input, output, cached []int64
}

func rowsOf(turns []engine.Turn) (turnRows, error) {
	var r turnRows
	err := r.add(turns)
	return r, err
}

// add appends turns to r, all of them or, when one cannot be encoded, none.
func (r *turnRows) add(turns []engine.Turn) error {
	raws := make([]string, len(turns))
	for i, t := range turns {
		raw, err := json.Marshal(t)
		if err != nil {
			return fmt.Errorf("encode turn %s%d: %w", t.Agent, t.Round, err)
		}
		raws[i] = string(raw)
	}
	for i, t := range turns {
		r.seq = append(r.seq, int32(turnSeq(t)))
		r.round = append(r.round, int32(t.Round))
		r.agent = append(r.agent, string(t.Agent))
		r.turn = append(r.turn, raws[i])
		r.input = append(r.input, t.Usage.InputTokens)
		r.output = append(r.output, t.Usage.OutputTokens)
		r.cached = append(r.cached, t.Usage.CachedTokens)
	}
	return nil
}

// SaveTurns records turns of c's run, in one statement. It returns ErrFenced when a later run
// holds the task.
//
// The fence is the lock on the task's row (FOR SHARE) in the same statement: it finds the row
// only while c's run holds the task, and a claim (an UPDATE of the row) waits for it or, having
// committed first, makes it find nothing. A lock writes no new version of the row, as an
// UPDATE would on every save.
func (s *Store) SaveTurns(ctx context.Context, c Claim, turns ...engine.Turn) error {
	encode := func() ([]any, error) {
		r, err := rowsOf(turns)
		return []any{c.TaskID, c.Run, r.seq, r.round, r.agent, r.turn, r.input, r.output, r.cached}, err
	}
	n, err := s.exec(ctx, `
		WITH t AS (
			SELECT id FROM convergence_tasks WHERE id = $1 AND run = $2 AND status = 'running' FOR SHARE)
		INSERT INTO convergence_turns (task_id, seq, round, agent, run, turn, input_tokens, output_tokens, cached_tokens)
		SELECT t.id, x.seq, x.round, x.agent, $2, x.turn, x.input, x.output, x.cached
		FROM t, unnest($3::int2[], $4::int2[], $5::text[], $6::json[], $7::int8[], $8::int8[], $9::int8[])
			AS x(seq, round, agent, turn, input, output, cached)`,
		encode)
	if err != nil {
		return fmt.Errorf("save %d turns of %s: %w", len(turns), c.TaskID, err)
	}
	if n == 0 && len(turns) > 0 {
		return ErrFenced
	}
	return nil
}

// SaveRound records round rd of c's run, its view (RoundViewOf), and turns, the run's turns not
// saved yet (the round's two, unless its A turn was saved before), in one statement. It
// returns the view, reports whether the task's cancellation was requested, and returns
// ErrFenced when a later run holds the task.
func (s *Store) SaveRound(ctx context.Context, c Claim, turns []engine.Turn, rd engine.Round) (view []byte, cancelRequested bool, err error) {
	saved := make(chan struct{})
	s.StartRound(ctx, c, turns, rd, func(v []byte, cancel bool, e error) {
		view, cancelRequested, err = v, cancel, e
		close(saved)
	})
	<-saved
	return view, cancelRequested, err
}

// StartRound is SaveRound without the wait: with a group commit it queues the write and
// returns, and saved gets the outcome once the write's batch has committed or failed, on the
// writer's goroutine, which also encodes the round and its turns and writes them with the
// rounds of other runs in the batch (saveRounds). A run whose engine goes on with its next call
// meanwhile needs no goroutine of its own for the write. Without a group commit, saved is
// called before StartRound returns.
func (s *Store) StartRound(ctx context.Context, c Claim, turns []engine.Turn, rd engine.Round, saved func(view []byte, cancelRequested bool, err error)) {
	w := &roundWrite{runKey: runKey{c.TaskID, c.Run}, turns: turns, round: rd}
	done := func(err error) {
		switch {
		case w.err != nil:
			saved(nil, false, w.err) // Not encoded, so not sent.
		case err != nil:
			saved(w.view, false, fmt.Errorf("save round %d of %s: %w", rd.Number, c.TaskID, err))
		case !w.found:
			saved(w.view, false, ErrFenced)
		default:
			saved(w.view, w.cancelRequested, nil)
		}
	}
	if s.writer != nil {
		s.writer.start(&op{round: w, done: done})
		return
	}
	sql, args, scan := saveRounds([]*roundWrite{w})
	if len(args) == 0 {
		done(w.err)
		return
	}
	rows, err := s.pool.Query(ctx, sql, args...)
	if err == nil {
		err = scan(rows)
	}
	done(err)
}

// roundWrite is one run's round to record, with what its write found.
type roundWrite struct {
	runKey
	turns []engine.Turn
	round engine.Round

	view []byte // the round's view, once encoded
	err  error  // why it could not be encoded
	// found is whether the run still holds its task; cancelRequested, whether the task's
	// cancellation was requested.
	found, cancelRequested bool
}

// runKey names one run of a task.
type runKey struct {
	taskID string
	run    int
}

// saveRounds returns one statement that records the rounds ws of any number of runs, each
// with its view and turns, and its scan of the result, which sets each write's found and
// cancelRequested. A round whose view or turns cannot be encoded gets its err and is left out;
// when none is left, args is empty. Each run is fenced by a lock on its own task's row, as in
// SaveTurns, so a run that lost its task writes nothing while the others write.
func saveRounds(ws []*roundWrite) (sql string, args []any, scan func(pgx.Rows) error) {
	var (
		ids, views            []string
		runs, numbers, scores []int32
		turnIDs               []string // each turn's task and run
		turnRuns              []int32
		turns                 turnRows
		written               = make(map[runKey]*roundWrite, len(ws))
	)
	for _, w := range ws {
		view, err := json.Marshal(RoundViewOf(w.taskID, w.round))
		if err != nil {
			w.err = fmt.Errorf("encode round %d of %s: %w", w.round.Number, w.taskID, err)
			continue
		}
		if err := turns.add(w.turns); err != nil {
			w.err = err
			continue
		}
		w.view = view
		written[w.runKey] = w
		ids, runs = append(ids, w.taskID), append(runs, int32(w.run))
		numbers, scores = append(numbers, int32(w.round.Number)), append(scores, int32(w.round.Score.Value))
		views = append(views, string(view))
		for range w.turns {
			turnIDs, turnRuns = append(turnIDs, w.taskID), append(turnRuns, int32(w.run))
		}
	}
	if len(ids) == 0 {
		return "", nil, nil
	}
	sql = `
		WITH w AS (
			SELECT * FROM unnest($1::text[], $2::int4[], $3::int2[], $4::int2[], $5::json[]) AS w(task_id, run, number, score, round)),
		t AS (
			SELECT c.id, c.run, c.cancel_requested_at IS NOT NULL AS cancel
			FROM convergence_tasks c JOIN w ON c.id = w.task_id AND c.run = w.run
			WHERE c.status = 'running' ORDER BY c.id FOR SHARE OF c),
		turns AS (
			INSERT INTO convergence_turns (task_id, seq, round, agent, run, turn, input_tokens, output_tokens, cached_tokens)
			SELECT x.task_id, x.seq, x.round, x.agent, x.run, x.turn, x.input, x.output, x.cached
			FROM unnest($6::text[], $7::int4[], $8::int2[], $9::int2[], $10::text[], $11::json[], $12::int8[], $13::int8[], $14::int8[])
				AS x(task_id, run, seq, round, agent, turn, input, output, cached)
			JOIN t ON t.id = x.task_id AND t.run = x.run),
		r AS (
			INSERT INTO convergence_rounds (task_id, number, score, round)
			SELECT w.task_id, w.number, w.score, w.round FROM w JOIN t ON t.id = w.task_id AND t.run = w.run)
		SELECT id, run, cancel FROM t`
	args = []any{ids, runs, numbers, scores, views,
		turnIDs, turnRuns, turns.seq, turns.round, turns.agent, turns.turn, turns.input, turns.output, turns.cached}
	scan = func(rows pgx.Rows) error {
		defer rows.Close()
		var k runKey
		var cancel bool
		for rows.Next() {
			if err := rows.Scan(&k.taskID, &k.run, &cancel); err != nil {
				return err
			}
			if w := written[k]; w != nil {
				w.found, w.cancelRequested = true, cancel
			}
		}
		return rows.Err()
	}
	return sql, args, scan
}

// Outcome is how a task ended.
type Outcome struct {
	Status Status // completed, failed or cancelled
	Result api.Result
	Error  string
}

// Finish records the end of c's run: the task's status, result and exact usage, the run's
// turns not saved yet (turns), its converge.completed or converge.failed event and, when it
// named a webhook URL, its webhook delivery, in one statement (through the group commit when
// there is one), then wakes ob's relay. It returns ErrFenced, writing nothing, when a later run
// holds the task.
func (s *Store) Finish(ctx context.Context, ob *outbox.Outbox, c Claim, o Outcome, turns ...engine.Turn) error {
	// The end's time is taken here, so that the row, the event and the webhook carry the same
	// instant (to the microsecond the database keeps).
	finishedAt := time.Now().UTC().Truncate(time.Microsecond)
	encode := func() ([]any, error) {
		startedAt := c.StartedAt
		e, err := endOf(Record{
			ID: c.TaskID, EnvID: c.EnvID, OrgID: c.OrgID, Type: c.Request.Type, Status: o.Status, Request: c.Request,
			Result: &o.Result, Rounds: o.Result.Rounds, Usage: EventUsage(o.Result.Usage), Error: o.Error, RequestID: c.RequestID,
			CreatedAt: c.CreatedAt, StartedAt: &startedAt, FinishedAt: &finishedAt,
		}, SourceConverger)
		if err != nil {
			return nil, err
		}
		event, err := outbox.NewRow(ctx, e.subject, e.event)
		if err != nil {
			return nil, err
		}
		var hook webhook.Delivery
		var body []byte
		if e.hook != nil {
			hook = *e.hook
			if body, err = hook.Body(); err != nil {
				return nil, err
			}
		}
		rows, err := rowsOf(turns)
		if err != nil {
			return nil, err
		}
		result, err := json.Marshal(o.Result)
		if err != nil {
			return nil, fmt.Errorf("encode result: %w", err)
		}
		u := o.Result.Usage
		return []any{c.TaskID, c.Run, o.Status, result, o.Result.StopReason, scoreOf(o), o.Result.Rounds,
			u.InputTokens, u.OutputTokens, u.CachedTokens, u.TotalTokens, o.Error, finishedAt,
			rows.seq, rows.round, rows.agent, rows.turn, rows.input, rows.output, rows.cached,
			hook.ID, c.EnvID, hook.URL, hook.EventType, body,
			event.EventID, event.Subject, event.Payload, webhook.TraceParent(ctx)}, nil
	}
	n, err := s.exec(ctx, `
		WITH t AS (
			UPDATE convergence_tasks SET status = $3, result = $4, stop_reason = $5, convergence_score = $6,
				rounds = $7, input_tokens = $8, output_tokens = $9, cached_tokens = $10, total_tokens = $11,
				error = NULLIF($12, ''), finished_at = $13, updated_at = now()
			WHERE id = $1 AND run = $2 AND status = 'running'
			RETURNING id),
		turns AS (
			INSERT INTO convergence_turns (task_id, seq, round, agent, run, turn, input_tokens, output_tokens, cached_tokens)
			SELECT t.id, x.seq, x.round, x.agent, $2, x.turn, x.input, x.output, x.cached
			FROM t, unnest($14::int2[], $15::int2[], $16::text[], $17::json[], $18::int8[], $19::int8[], $20::int8[])
				AS x(seq, round, agent, turn, input, output, cached)),
		hook AS (
			INSERT INTO webhook_deliveries (id, task_id, env_id, url, event_type, payload, traceparent)
			SELECT $21, t.id, $22, $23, $24, $25, NULLIF($29, '') FROM t WHERE $23 <> ''
			ON CONFLICT (task_id) DO NOTHING)
		INSERT INTO outbox (event_id, subject, payload) SELECT $26, $27, $28 FROM t`,
		encode)
	if err != nil {
		return fmt.Errorf("finish task %s: %w", c.TaskID, err)
	}
	if n == 0 {
		return ErrFenced
	}
	ob.Wake()
	return nil
}

// scoreOf is the convergence score a task's row keeps: a completed task's, and none for the
// others.
func scoreOf(o Outcome) *float64 {
	if o.Status != StatusCompleted {
		return nil
	}
	v := float64(o.Result.ConvergenceScore)
	return &v
}

// end is what a task's end writes beside its row: its result event and, when the task names a
// webhook URL, its webhook delivery.
type end struct {
	subject string
	event   events.Envelope
	hook    *webhook.Delivery
}

// endOf returns the end of the finished task r, its event written by source.
func endOf(r Record, source string) (end, error) {
	o := r.Result
	subject, typ := events.SubjectConvergeCompleted, events.TypeConvergeCompleted
	var data any = events.ConvergeCompleted{
		TaskID: r.ID, EnvID: r.EnvID, OrgID: r.OrgID, Type: r.Type, StopReason: string(o.StopReason),
		ConvergenceScore: float64(o.ConvergenceScore), Rounds: o.Rounds,
		Usage: EventUsage(o.Usage), Agents: EventAgents(o.Agents), FinishedAt: *r.FinishedAt,
	}
	if r.Status != StatusCompleted {
		subject, typ = events.SubjectConvergeFailed, events.TypeConvergeFailed
		data = events.ConvergeFailed{
			TaskID: r.ID, EnvID: r.EnvID, OrgID: r.OrgID, Type: r.Type, StopReason: string(o.StopReason),
			Error: r.Error, Rounds: o.Rounds, Usage: EventUsage(o.Usage), Agents: EventAgents(o.Agents), FinishedAt: *r.FinishedAt,
		}
	}
	env, err := events.NewEnvelope(source, typ, r.ID, r.RequestID, data)
	if err != nil {
		return end{}, err
	}
	e := end{subject: subject, event: env}
	if r.Request.WebhookURL != "" {
		e.hook = &webhook.Delivery{
			ID:        webhook.NewDeliveryID(),
			TaskID:    r.ID,
			EnvID:     r.EnvID,
			URL:       r.Request.WebhookURL,
			EventType: subject,
			Data:      r.View(nil),
		}
	}
	return e, nil
}

// finish records the end of a task that is still queued, in tx, and writes its result event
// and webhook delivery. It returns ErrFenced when the task is not queued.
func (s *Store) finish(ctx context.Context, tx pgx.Tx, id, source string, o Outcome) error {
	result, err := json.Marshal(o.Result)
	if err != nil {
		return fmt.Errorf("encode result: %w", err)
	}
	u := o.Result.Usage
	var r Record
	var req []byte
	var requestID *string
	err = tx.QueryRow(ctx, `
		UPDATE convergence_tasks SET status = $2, result = $3, stop_reason = $4, convergence_score = $5,
			rounds = $6, input_tokens = $7, output_tokens = $8, cached_tokens = $9, total_tokens = $10,
			error = NULLIF($11, ''), finished_at = now(), updated_at = now()
		WHERE id = $1 AND status = 'queued'
		RETURNING env_id, org_id, type, request, request_id, created_at, started_at, finished_at`,
		id, o.Status, result, o.Result.StopReason, scoreOf(o), o.Result.Rounds,
		u.InputTokens, u.OutputTokens, u.CachedTokens, u.TotalTokens, o.Error).
		Scan(&r.EnvID, &r.OrgID, &r.Type, &req, &requestID, &r.CreatedAt, &r.StartedAt, &r.FinishedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return ErrFenced
	}
	if err != nil {
		return fmt.Errorf("finish task %s: %w", id, err)
	}
	r.ID, r.Status, r.Result, r.Rounds, r.Usage, r.Error, r.RequestID = id, o.Status, &o.Result, o.Result.Rounds, EventUsage(u), o.Error, deref(requestID)
	if err := json.Unmarshal(req, &r.Request); err != nil {
		return fmt.Errorf("decode task %s request: %w", id, err)
	}
	e, err := endOf(r, source)
	if err != nil {
		return err
	}
	if err := outbox.Write(ctx, tx, e.subject, e.event); err != nil {
		return err
	}
	if e.hook == nil {
		return nil
	}
	return webhook.Enqueue(ctx, tx, s.secrets, *e.hook)
}

// RequestCancel records that tenant envID wants task id cancelled and returns the task's
// status after it. A queued task is cancelled here and then, in the same transaction, with
// its converge.failed event and webhook. A running task stays running: the caller publishes
// on CancelSubject, and its converger ends it as cancelled. A finished task is left as it is.
// An unknown task, or another tenant's, returns ErrNotFound.
func (s *Store) RequestCancel(ctx context.Context, ob *outbox.Outbox, envID int64, id string) (Status, error) {
	var status Status
	err := ob.Tx(ctx, func(tx pgx.Tx) error {
		err := tx.QueryRow(ctx, `
			UPDATE convergence_tasks SET cancel_requested_at = coalesce(cancel_requested_at, now()), updated_at = now()
			WHERE id = $1 AND env_id = $2 AND status IN ('queued', 'running')
			RETURNING status`, id, envID).Scan(&status)
		if errors.Is(err, pgx.ErrNoRows) {
			err = tx.QueryRow(ctx, `SELECT status FROM convergence_tasks WHERE id = $1 AND env_id = $2`, id, envID).Scan(&status)
			if errors.Is(err, pgx.ErrNoRows) {
				return ErrNotFound
			}
			return err
		}
		if err != nil || status != StatusQueued {
			return err
		}
		status = StatusCancelled
		o := Outcome{Status: StatusCancelled, Error: "cancelled by the tenant before it started", Result: api.Result{
			StopReason:     api.ResultStopReason(engine.StopCancelled),
			ScoreBreakdown: breakdownOf(emptyBreakdown()),
			ScoreMethod:    engine.MethodVersion,
			Output:         "Not converged: the task was cancelled before it started.",
			Disputed:       []string{},
			Agents:         []api.AgentUsage{},
		}}
		return s.finish(ctx, tx, id, SourceConverger, o)
	})
	if err != nil {
		if errors.Is(err, ErrNotFound) {
			return "", err
		}
		return "", fmt.Errorf("cancel task %s: %w", id, err)
	}
	return status, nil
}

// emptyBreakdown is the breakdown of a task that scored no round: every component at 0.
func emptyBreakdown() engine.Breakdown {
	return engine.Breakdown{
		Agreement:  engine.Component{Weight: engine.WeightAgreement},
		OpenIssues: engine.Component{Weight: engine.WeightOpenIssues},
		Stability:  engine.Component{Weight: engine.WeightStability, Input: 1},
		Overlap:    engine.Component{Weight: engine.WeightOverlap},
	}
}

// TenantDestroyed records that tenant envID was destroyed and returns its tasks that have not
// finished, for the caller to cancel. A converge request of the tenant's that arrives later
// is not claimable: [Store.Destroyed] says why.
func (s *Store) TenantDestroyed(ctx context.Context, envID int64) ([]string, error) {
	b := &pgx.Batch{}
	b.Queue(`INSERT INTO destroyed_tenants (env_id) VALUES ($1) ON CONFLICT (env_id) DO NOTHING`, envID)
	var ids []string
	b.Queue(`SELECT id FROM convergence_tasks WHERE env_id = $1 AND status IN ('queued', 'running') ORDER BY id`, envID).
		Query(func(rows pgx.Rows) error {
			var err error
			ids, err = pgx.CollectRows(rows, pgx.RowTo[string])
			return err
		})
	if err := s.pool.SendBatch(ctx, b).Close(); err != nil {
		return nil, fmt.Errorf("record tenant %d destroyed: %w", envID, err)
	}
	return ids, nil
}

// Destroyed reports whether tenant envID was destroyed.
func (s *Store) Destroyed(ctx context.Context, envID int64) (bool, error) {
	var destroyed bool
	err := s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM destroyed_tenants WHERE env_id = $1)`, envID).Scan(&destroyed)
	if err != nil {
		return false, fmt.Errorf("look up tenant %d: %w", envID, err)
	}
	return destroyed, nil
}

// finishedColumns are the columns scanFinished reads.
const finishedColumns = `id, env_id, org_id, status, coalesce(finished_at, '0001-01-01'), input_tokens, output_tokens,
	cached_tokens, total_tokens, convergence_score, coalesce(request->>'model', ''), coalesce(result->'agents', '[]')`

// scanFinished reads a task's record, as finishedColumns select it.
func scanFinished(r pgx.CollectableRow) (events.FinishedTask, error) {
	var t events.FinishedTask
	var agents []byte
	err := r.Scan(&t.TaskID, &t.EnvID, &t.OrgID, &t.Status, &t.FinishedAt, &t.Usage.InputTokens, &t.Usage.OutputTokens,
		&t.Usage.CachedTokens, &t.Usage.TotalTokens, &t.ConvergenceScore, &t.Model, &agents)
	if err == nil {
		err = json.Unmarshal(agents, &t.Agents)
	}
	t.FinishedAt = t.FinishedAt.UTC()
	return t, err
}

// Finished returns a page of the tasks that finished in [q.From, q.To), in order of finish time
// and ID, after the one q names.
func (s *Store) Finished(ctx context.Context, q events.FinishedTasksQuery) (events.FinishedTasks, error) {
	rows, err := s.pool.Query(ctx, `
		SELECT `+finishedColumns+`
		FROM convergence_tasks
		WHERE finished_at >= $1 AND finished_at < $2 AND status IN ('completed', 'failed', 'cancelled')
			AND (finished_at, id) > ($3, $4)
		ORDER BY finished_at, id LIMIT $5`,
		q.From, q.To, q.AfterFinishedAt, q.AfterTaskID, q.Limit+1)
	if err != nil {
		return events.FinishedTasks{}, fmt.Errorf("read finished tasks: %w", err)
	}
	list, err := pgx.CollectRows(rows, scanFinished)
	if err != nil {
		return events.FinishedTasks{}, fmt.Errorf("read finished tasks: %w", err)
	}
	out := events.FinishedTasks{Tasks: list}
	if len(list) > q.Limit {
		out.Tasks, out.More = list[:q.Limit], true
	}
	return out, nil
}

// Known returns the records of those of ids that name a recorded task.
func (s *Store) Known(ctx context.Context, ids []string) ([]events.FinishedTask, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+finishedColumns+` FROM convergence_tasks WHERE id = ANY($1)`, ids)
	if err != nil {
		return nil, fmt.Errorf("look up tasks: %w", err)
	}
	known, err := pgx.CollectRows(rows, scanFinished)
	if err != nil {
		return nil, fmt.Errorf("look up tasks: %w", err)
	}
	return known, nil
}
