package webhook

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/convergence-dev/convergence/internal/telemetry"
)

// Config tunes a [Deliverer]. The zero value of a field means its default.
type Config struct {
	// Timeout bounds one attempt, connection to last byte of the answer's headers. Default 10s.
	Timeout time.Duration
	// RetryFor is how long after a delivery was created it is still retried. Default 24h.
	RetryFor time.Duration
	// RetryBase is the wait after the first failed attempt; it doubles per attempt, with
	// jitter, up to RetryMax. Defaults 5s and 1h.
	RetryBase, RetryMax time.Duration
	// AllowPrivateTargets lets deliveries reach loopback, private, link-local and reserved
	// addresses. Off by default, against request forgery; tests turn it on to deliver to an
	// httptest server.
	AllowPrivateTargets bool
	// Concurrency bounds the attempts in flight. Default 16.
	Concurrency int
	// PollInterval is how often due retries are looked for when no new delivery wakes the
	// deliverer. Default 1s.
	PollInterval time.Duration
}

func (c Config) withDefaults() Config {
	if c.Timeout <= 0 {
		c.Timeout = 10 * time.Second
	}
	if c.RetryFor <= 0 {
		c.RetryFor = 24 * time.Hour
	}
	if c.RetryBase <= 0 {
		c.RetryBase = 5 * time.Second
	}
	if c.RetryMax <= 0 {
		c.RetryMax = time.Hour
	}
	if c.Concurrency <= 0 {
		c.Concurrency = 16
	}
	if c.PollInterval <= 0 {
		c.PollInterval = time.Second
	}
	return c
}

// Validate says what is wrong with c.
func (c Config) Validate() error {
	c = c.withDefaults()
	if c.RetryBase > c.RetryMax {
		return fmt.Errorf("webhook retry base %s exceeds the maximum backoff %s", c.RetryBase, c.RetryMax)
	}
	return nil
}

// Deliverer sends the recorded deliveries. Several deliverers (one per converger replica) may
// run on one database: each claims due rows with FOR UPDATE SKIP LOCKED and moves their next
// attempt past its timeout, so no two attempt a delivery at once, and one that dies leaves the
// row to another.
type Deliverer struct {
	pool    *pgxpool.Pool
	secrets *Secrets
	cfg     Config
	client  *http.Client
	log     *slog.Logger
	wake    chan struct{}

	outcomes *prometheus.CounterVec
	duration prometheus.Histogram
}

// NewDeliverer wires a deliverer; it starts nothing.
func NewDeliverer(pool *pgxpool.Pool, secrets *Secrets, cfg Config, logger *slog.Logger, reg prometheus.Registerer) *Deliverer {
	cfg = cfg.withDefaults()
	d := &Deliverer{
		pool:    pool,
		secrets: secrets,
		cfg:     cfg,
		client:  guardedClient(cfg.Timeout, cfg.AllowPrivateTargets),
		log:     logger.With("component", "webhook"),
		wake:    make(chan struct{}, 1),
		outcomes: telemetry.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: telemetry.Namespace, Subsystem: "webhook", Name: "attempts_total",
			Help: "Webhook delivery attempts, by outcome (delivered, retried, failed).",
		}, []string{"outcome"})),
		duration: telemetry.Register(reg, prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: telemetry.Namespace, Subsystem: "webhook", Name: "attempt_duration_seconds",
			Help:    "Time one webhook delivery attempt took.",
			Buckets: prometheus.ExponentialBuckets(0.005, 4, 8),
		})),
	}
	for _, outcome := range []string{"delivered", "retried", "failed"} {
		d.outcomes.WithLabelValues(outcome) // Each series exists from the start, for alerts.
	}
	return d
}

// Wake tells the deliverer that deliveries were committed. It never blocks.
func (d *Deliverer) Wake() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// Run delivers until ctx is done, then waits for the attempts in flight (their requests are
// cancelled; the rows are retried after their claim lapses) and returns nil. Database errors
// are logged and retried; they never end Run.
func (d *Deliverer) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	sem := make(chan struct{}, d.cfg.Concurrency)
	freed := make(chan struct{}, 1)
	poll := time.NewTicker(d.cfg.PollInterval)
	defer poll.Stop()
	for {
		if free := cap(sem) - len(sem); free > 0 {
			batch, err := d.claim(ctx, free)
			if err != nil && ctx.Err() == nil {
				d.log.Warn("claim webhook deliveries", "err", err)
			}
			for _, j := range batch {
				sem <- struct{}{}
				wg.Go(func() {
					defer func() {
						<-sem
						select {
						case freed <- struct{}{}:
						default:
						}
					}()
					d.attempt(ctx, j)
				})
			}
			if err == nil && len(batch) == free {
				continue // More may be due.
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-d.wake:
		case <-freed:
		case <-poll.C:
		}
	}
}

// job is a claimed delivery.
type job struct {
	id       string
	envID    int64
	url      string
	payload  []byte
	attempts int
	// traceparent is the trace the delivery's attempts join, "" for none.
	traceparent string
}

func (d *Deliverer) claim(ctx context.Context, n int) ([]job, error) {
	lease := d.cfg.Timeout + 30*time.Second
	rows, err := d.pool.Query(ctx, `
		UPDATE webhook_deliveries d
		SET next_attempt_at = now() + $2::interval, attempts = d.attempts + 1, updated_at = now()
		WHERE d.id IN (
			SELECT id FROM webhook_deliveries
			WHERE status = 'pending' AND next_attempt_at <= now()
			ORDER BY next_attempt_at LIMIT $1
			FOR UPDATE SKIP LOCKED)
		RETURNING d.id, d.env_id, d.url, d.payload, d.attempts, COALESCE(d.traceparent, '')`, n, lease)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (job, error) {
		var j job
		err := r.Scan(&j.id, &j.envID, &j.url, &j.payload, &j.attempts, &j.traceparent)
		return j, err
	})
}

// maxErrorLen bounds the error recorded for an attempt; the tenant sees it.
const maxErrorLen = 500

func (d *Deliverer) attempt(ctx context.Context, j job) {
	start := time.Now()
	log := d.log.With("delivery_id", j.id, "host", hostOf(j.url), "attempt", j.attempts)
	// The attempt's span, in the trace of the run that made the delivery; the receiver gets
	// its traceparent.
	ctx = propagation.TraceContext{}.Extract(ctx, propagation.MapCarrier{"traceparent": j.traceparent})
	ctx, span := telemetry.Tracer().Start(ctx, "POST webhook", trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(attribute.String("server.address", hostOf(j.url)), attribute.Int("webhook.attempt", j.attempts)))
	defer span.End()
	status, err := d.post(ctx, j)
	span.SetAttributes(attribute.Int("http.response.status_code", status))
	if err != nil || status < 200 || status >= 300 {
		span.SetStatus(codes.Error, "not delivered")
	}
	if ctx.Err() != nil {
		return // Shutting down: the claim lapses and the delivery is retried.
	}
	telemetry.Observe(ctx, d.duration, time.Since(start).Seconds())
	outcome := "delivered"
	switch {
	case err == nil && status >= 200 && status < 300:
		err = d.record(ctx, j, "delivered", status, "", 0)
	case errors.Is(err, ErrRefusedTarget) || status == http.StatusGone:
		outcome = "failed"
		msg := "the receiver answered 410 Gone"
		if err != nil {
			msg = err.Error()
		}
		log.Warn("webhook delivery failed for good", "err", msg, "status", status)
		err = d.record(ctx, j, "failed", status, msg, 0)
	default:
		outcome = "retried"
		msg := fmt.Sprintf("the receiver answered %d", status)
		if err != nil {
			msg = err.Error()
		}
		wait := d.backoff(j.attempts)
		log.Info("webhook delivery attempt failed; will retry", "err", msg, "status", status, "retry_in", wait)
		err = d.record(ctx, j, "retry", status, msg, wait)
	}
	d.outcomes.WithLabelValues(outcome).Inc()
	if err != nil {
		log.Warn("record webhook delivery attempt", "err", err)
	}
}

// post makes one attempt and returns the answer's status.
func (d *Deliverer) post(ctx context.Context, j job) (int, error) {
	secret, err := d.secrets.load(ctx, d.pool, j.envID)
	if errors.Is(err, errNoSecret) {
		secret, err = d.secrets.Ensure(ctx, d.pool, j.envID)
	}
	if err != nil {
		return 0, err
	}
	now := time.Now()
	sig, err := Sign(secret.signing(now), j.id, now, j.payload)
	if err != nil {
		return 0, err
	}
	// The URL is the tenant's own: the guarded client decides which addresses it may reach.
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, j.url, bytes.NewReader(j.payload)) //nolint:gosec // G704: see above.
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "Convergence-Webhooks/1")
	req.Header.Set(HeaderID, j.id)
	req.Header.Set(HeaderTimestamp, strconv.FormatInt(now.Unix(), 10))
	req.Header.Set(HeaderSignature, sig)
	propagation.TraceContext{}.Inject(ctx, propagation.HeaderCarrier(req.Header))
	resp, err := d.client.Do(req) //nolint:gosec // G704: see above.
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // Lets the connection be reused.
	return resp.StatusCode, nil
}

// record stores the outcome of an attempt. A retry whose next attempt would fall after
// RetryFor since the delivery was created fails the delivery instead, on the database's clock.
func (d *Deliverer) record(ctx context.Context, j job, outcome string, status int, msg string, wait time.Duration) error {
	if len(msg) > maxErrorLen {
		msg = msg[:maxErrorLen]
	}
	var code *int
	if status != 0 {
		code = &status
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	var err error
	switch outcome {
	case "delivered":
		_, err = d.pool.Exec(ctx, `
			UPDATE webhook_deliveries SET status = 'delivered', delivered_at = now(), last_status_code = $2,
				last_error = NULL, updated_at = now()
			WHERE id = $1`, j.id, code)
	case "failed":
		_, err = d.pool.Exec(ctx, `
			UPDATE webhook_deliveries SET status = 'failed', last_status_code = $2, last_error = $3, updated_at = now()
			WHERE id = $1`, j.id, code, msg)
	default:
		_, err = d.pool.Exec(ctx, `
			UPDATE webhook_deliveries SET
				status = CASE WHEN now() + $4::interval > created_at + $5::interval THEN 'failed' ELSE 'pending' END,
				next_attempt_at = now() + $4::interval, last_status_code = $2, last_error = $3, updated_at = now()
			WHERE id = $1`, j.id, code, msg, wait, d.cfg.RetryFor)
	}
	return err
}

// backoff is the wait after attempt number attempt failed: RetryBase·2^(attempt-1), capped at
// RetryMax, with equal jitter so that a receiver that was down does not get every retry at
// once when it comes back.
func (d *Deliverer) backoff(attempt int) time.Duration {
	w := d.cfg.RetryBase
	for i := 1; i < attempt && w < d.cfg.RetryMax; i++ {
		w *= 2
	}
	w = min(w, d.cfg.RetryMax)
	return w/2 + rand.N(w/2+1) //nolint:gosec // G404: jitter needs no cryptographic randomness.
}

// hostOf is the host of a URL, for logs: the path and query may carry the tenant's tokens.
func hostOf(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return ""
	}
	return u.Host
}
