package metering

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/convergence-dev/convergence/internal/leader"
	"github.com/convergence-dev/convergence/internal/natsrpc"
	"github.com/convergence-dev/convergence/internal/periodic"
	"github.com/convergence-dev/convergence/pkg/events"
	"github.com/convergence-dev/convergence/pkg/events/consumer"
	"github.com/convergence-dev/convergence/services/metering/ledger"
	"github.com/convergence-dev/convergence/services/metering/pricing"
)

// Deps are the metering's dependencies; the caller owns and closes them.
type Deps struct {
	Pool     *pgxpool.Pool
	NC       *nats.Conn
	JS       jetstream.JetStream
	Logger   *slog.Logger
	Registry prometheus.Registerer
}

// Service is the metering.
type Service struct {
	cfg     Config
	deps    Deps
	logger  *slog.Logger
	store   *ledger.Store
	metrics *metrics
	table   *pricing.Table // as read at start; registered by Run
	prices  atomic.Pointer[ledger.Prices]
	hooks   hooks
	queries *natsrpc.Server
	// badPrices is the digest of the last price file that failed to load, so an unchanged bad
	// file is reported once, not on every check.
	badPrices [sha256.Size]byte
	// published wakes the usage publisher (publish.go) after a batch is recorded.
	published chan struct{}
}

// hooks let tests step into the ingest path.
type hooks struct {
	// afterCommit runs after a batch commits and before its messages are acknowledged; false
	// skips the acknowledgements, as a process that died there would.
	afterCommit func(source string, eventIDs []string, deliveries []uint64) bool
}

// New wires the metering; it starts nothing. It reads the price file, so a bad one fails the
// start with a message that says what is wrong in it.
func New(cfg Config, deps Deps) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	table, err := pricing.Load(cfg.Prices)
	if err != nil {
		return nil, fmt.Errorf("metering.prices: %w", err)
	}
	s := &Service{
		cfg:       cfg,
		deps:      deps,
		logger:    deps.Logger.With("service", "metering"),
		store:     ledger.NewStore(deps.Pool),
		metrics:   newMetrics(deps.Registry),
		table:     table,
		published: make(chan struct{}, 1),
	}
	s.queries = s.queryServer()
	return s, nil
}

// Run registers the price table, then consumes results and lifecycle facts and answers usage
// questions on the bus until ctx is done or a part fails. It returns nil after a clean stop; batches in flight are either
// committed and acknowledged or given back to JetStream.
func (s *Service) Run(ctx context.Context) error {
	p, err := ledger.RegisterPrices(ctx, s.deps.Pool, s.table)
	if err != nil {
		if ctx.Err() != nil {
			return nil // stopped while starting
		}
		return fmt.Errorf("metering prices: %w", err)
	}
	s.usePrices(p)
	s.refreshUnpriced(ctx)

	backoff := consumer.ExponentialBackoff(250*time.Millisecond, 30*time.Second)
	config := func(name, stream string, subjects []string, decode func(events.Envelope) (any, error)) consumer.BatchConfig {
		return consumer.BatchConfig{
			Config:    consumer.Config{Name: name, Stream: stream, Subjects: subjects, MaxDeliver: s.cfg.MaxDeliver, AckWait: s.cfg.AckWait, Backoff: backoff},
			BatchSize: s.cfg.BatchSize,
			IdleWait:  s.cfg.IdleWait,
			Decode:    decode,
		}
	}
	results := consumer.NewBatch(s.deps.JS,
		config(events.ConsumerMeteringResults, events.StreamConvergeResults, []string{events.SubjectConvergeCompleted, events.SubjectConvergeFailed},
			func(env events.Envelope) (any, error) { return decodeResult(env) }),
		ingest(s, "results", func(ctx context.Context, batch []ledger.TaskUsage) (ledger.Result, error) {
			kept, err := s.vouched(ctx, batch)
			if err != nil || len(kept) == 0 {
				return ledger.Result{}, err
			}
			return s.store.RecordTasks(ctx, *s.prices.Load(), kept)
		}, func(res ledger.Result) { s.countUnpriced(ctx, res) }),
		s.logger, ingestObserver{s.metrics, "results"})
	lifecycle := consumer.NewBatch(s.deps.JS,
		config(events.ConsumerMeteringLifecyle, events.StreamTenantLifecycle, []string{events.SubjectTenantLifecycle},
			func(env events.Envelope) (any, error) { return decodeLifecycle(env) }),
		ingest(s, "lifecycle", func(ctx context.Context, batch []ledger.LifecycleFact) (ledger.Result, error) {
			return s.store.RecordLifecycle(ctx, *s.prices.Load(), batch)
		}, nil),
		s.logger, ingestObserver{s.metrics, "lifecycle"})
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return results.Run(gctx) })
	g.Go(func() error { return lifecycle.Run(gctx) })
	g.Go(func() error { return s.queries.Run(gctx) })
	g.Go(func() error { s.watchPrices(gctx); return nil })
	g.Go(func() error { s.publishUsage(gctx); return nil })
	g.Go(func() error {
		return leader.Election{Role: leaderRole}.Run(gctx, s.deps.Pool, leader.NewMetrics(s.deps.Registry), s.logger, s.lead)
	})
	s.logger.Info("metering ready", "price_version", p.Label(), "price_version_id", p.VersionID, "currency", p.Currency())
	return g.Wait()
}

// leaderRole is the metering's election: its leader merges the rollups and checks the
// reconciliation.
const leaderRole = "metering"

// lead runs, for one term as the replicas' leader, the periodic work one replica does for
// all: the rollup merges and the reconciliation check. Each also takes turns under an advisory
// lock of its own, so two leaders overlapping for a moment never run it twice at once.
func (s *Service) lead(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Go(func() { s.mergeRollups(ctx) })
	wg.Go(func() { s.checkReconciliation(ctx) })
	wg.Wait()
}

// mergeRollups merges the rollup deltas every RollupMerge until ctx is done; one merge runs
// at a time, whichever replica asks.
func (s *Service) mergeRollups(ctx context.Context) {
	periodic.Every(ctx, s.cfg.RollupMerge, func() {
		start := time.Now()
		rows, ran, err := ledger.MergeRollups(ctx, s.deps.Pool)
		switch {
		case err != nil && ctx.Err() == nil:
			s.metrics.mergeErrors.Inc()
			s.logger.Warn("merge rollups; the deltas stay pending", "err", err)
		case ran:
			s.metrics.mergedRows.Add(float64(rows))
			s.metrics.mergeDuration.Observe(time.Since(start).Seconds())
		}
	})
}

// usePrices makes p the prices new usage is charged at.
func (s *Service) usePrices(p ledger.Prices) {
	s.prices.Store(&p)
	s.metrics.priceVersion.Set(float64(p.VersionID))
}

// countUnpriced counts the unpriced usage of a committed batch and, if there was some,
// refreshes the gauge of unpriced models.
func (s *Service) countUnpriced(ctx context.Context, res ledger.Result) {
	if res.UnpricedLines == 0 {
		return
	}
	s.metrics.unpricedLines.Add(float64(res.UnpricedLines))
	s.metrics.unpricedTokens.Add(float64(res.UnpricedTokens))
	s.logger.Warn("usage of a model without a price; it is recorded unpriced, see GET /api/v1/usage/unpriced",
		"lines", res.UnpricedLines, "tokens", res.UnpricedTokens)
	s.refreshUnpriced(ctx)
}

func (s *Service) refreshUnpriced(ctx context.Context) {
	n, err := ledger.CountUnpriced(ctx, s.deps.Pool)
	if err != nil {
		if ctx.Err() == nil {
			s.logger.Warn("count unpriced models", "err", err)
		}
		return
	}
	s.metrics.unpricedModels.Set(float64(n))
}

// unpricedRefresh is how often the unpriced-models gauge is refreshed, so it also falls when a
// repair in another process prices usage.
const unpricedRefresh = 30 * time.Second

// watchPrices reloads the price file when it changes and refreshes the unpriced-models gauge,
// until ctx is done. A file that cannot be loaded leaves the prices in force.
func (s *Service) watchPrices(ctx context.Context) {
	interval := unpricedRefresh
	reload := s.cfg.Prices != "" && s.cfg.PricesReload > 0
	if reload {
		interval = min(interval, s.cfg.PricesReload)
	}
	lastRefresh := time.Now()
	periodic.Every(ctx, interval, func() {
		if reload {
			s.reloadPrices(ctx)
		}
		if time.Since(lastRefresh) >= unpricedRefresh {
			s.refreshUnpriced(ctx)
			lastRefresh = time.Now()
		}
	})
}

// reloadPrices loads the price file if its content changed.
func (s *Service) reloadPrices(ctx context.Context) {
	b, err := os.ReadFile(s.cfg.Prices)
	sum := sha256.Sum256(b)
	if err == nil && sum == s.badPrices {
		return
	}
	if err == nil {
		var t *pricing.Table
		if t, err = pricing.Parse(b); err == nil {
			cur := s.prices.Load()
			if bytes.Equal(t.Digest(), cur.Digest()) {
				return
			}
			var p ledger.Prices
			if p, err = ledger.RegisterPrices(ctx, s.deps.Pool, t); err == nil {
				s.usePrices(p)
				s.logger.Info("prices reloaded", "price_version", p.Label(), "price_version_id", p.VersionID, "previous", cur.Label())
				return
			}
		}
	}
	if errors.Is(err, context.Canceled) {
		return
	}
	s.badPrices = sum
	s.metrics.priceReloadErrors.Inc()
	s.logger.Error("price file not reloaded; the prices in force stay", "file", s.cfg.Prices, "err", err)
}
