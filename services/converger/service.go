package converger

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/convergence-dev/convergence/internal/natsrpc"
	"github.com/convergence-dev/convergence/internal/outbox"
	"github.com/convergence-dev/convergence/internal/seal"
	"github.com/convergence-dev/convergence/internal/telemetry"
	"github.com/convergence-dev/convergence/pkg/events"
	"github.com/convergence-dev/convergence/pkg/events/consumer"
	"github.com/convergence-dev/convergence/services/converger/engine"
	"github.com/convergence-dev/convergence/services/converger/llm"
	"github.com/convergence-dev/convergence/services/converger/tasks"
	"github.com/convergence-dev/convergence/services/converger/webhook"
)

// Deps are the converger's dependencies; the caller owns and closes them.
type Deps struct {
	Pool     *pgxpool.Pool
	Outbox   *outbox.Outbox
	NC       *nats.Conn
	JS       jetstream.JetStream
	Logger   *slog.Logger
	Registry prometheus.Registerer
	// Secrets is the keyring that seals the tenants' webhook signing secrets in the database.
	Secrets *seal.Keyring
	// Provider, when set, is used instead of the configured one, as is: wrap it in
	// llm.Retrying to have it retried. For tests and for programs that embed the converger.
	Provider llm.Provider
}

// Service is the converger.
type Service struct {
	cfg          Config
	deps         Deps
	logger       *slog.Logger
	providerKind string
	provider     llm.Provider
	// defaultModel is the model the provider is asked for when a task names none; empty for a
	// provider given in Deps.
	defaultModel string
	engine       *engine.Engine
	writer       *tasks.Writer
	secrets      *webhook.Secrets
	store        *tasks.Store
	consumer     *consumer.Consumer[events.ConvergeRequest]
	deliverer    *webhook.Deliverer
	running      *registry
	// turns admit tasks to be claimed and run, a quarter more than Concurrency at once, to
	// the waiting tenants in turn; slots hold a token for each admitted task that runs its
	// engine, Concurrency at most.
	turns   *fairSlots
	slots   chan struct{}
	metrics *metrics
	queries *natsrpc.Server
}

// New wires the converger from its config and dependencies; it starts nothing and makes no
// request.
func New(cfg Config, deps Deps) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if deps.Pool == nil || deps.Outbox == nil || deps.NC == nil || deps.JS == nil || deps.Logger == nil || deps.Registry == nil || deps.Secrets == nil {
		return nil, errors.New("converger: every dependency but Provider is required")
	}
	cfg = cfg.withDefaults()
	// Batches of up to 256 writes, four in flight: at a thousand tasks in flight the writes of
	// a burst go out in a handful of transactions on a handful of connections.
	writer := tasks.NewWriter(deps.Pool, 256, 4)
	secrets := webhook.NewSecrets(deps.Secrets)
	s := &Service{
		cfg:     cfg,
		deps:    deps,
		logger:  deps.Logger.With("service", "converger"),
		writer:  writer,
		secrets: secrets,
		store:   tasks.NewStore(deps.Pool, secrets).GroupCommit(writer),
		running: newRegistry(),
		turns:   newFairSlots(cfg.Concurrency + max(1, cfg.Concurrency/4)),
		slots:   make(chan struct{}, cfg.Concurrency),
	}
	s.metrics = newMetrics(deps.Registry, s.turns)
	s.provider = deps.Provider
	s.providerKind = "custom"
	if s.provider == nil {
		kind, err := cfg.providerKind()
		if err != nil {
			return nil, err
		}
		if s.provider, err = cfg.newProvider(kind, s.logger, deps.Registry); err != nil {
			return nil, fmt.Errorf("converger: %w", err)
		}
		s.providerKind = kind
		s.defaultModel = cfg.defaultModel(kind)
	}
	var err error
	if s.engine, err = engine.New(cfg.engineConfig(), s.provider, s.logger); err != nil {
		return nil, fmt.Errorf("converger: %w", err)
	}
	s.consumer = consumer.New(deps.JS, consumer.Config{
		Name:        events.ConsumerConverger,
		Stream:      events.StreamConvergeCommands,
		Subjects:    []string{events.SubjectConvergeRequest},
		Concurrency: cfg.Concurrency + max(1, cfg.Concurrency/4) + cfg.MaxWaiting, // See Config.
		MaxDeliver:  cfg.MaxDeliver,
		AckWait:     cfg.AckWait,
	}, s.handle, s.logger, telemetry.NewConsumerMetrics(deps.Registry))
	s.deliverer = webhook.NewDeliverer(deps.Pool, secrets, cfg.Webhook, s.logger, deps.Registry)
	s.queries = s.queryServer()
	return s, nil
}

// Run consumes convergence requests, delivers webhooks (tasks' results and tenants' budget
// alerts) and answers questions about tasks on the bus until ctx is done or a part fails.
// It then stops taking requests, leaves the tasks in flight to their next delivery (they
// resume from their persisted turns), and returns.
func (s *Service) Run(ctx context.Context) error {
	s.announceProvider()
	sub, err := s.deps.NC.Subscribe(tasks.CancelSubjects, func(m *nats.Msg) {
		if id, ok := tasks.TaskOfCancelSubject(m.Subject); ok && s.running.cancel(id, errCancelRequested) {
			s.logger.Info("cancelling task on request", "task_id", id)
		}
	})
	if err != nil {
		return fmt.Errorf("subscribe to cancel requests: %w", err)
	}
	defer func() { _ = sub.Unsubscribe() }()

	// The writer outlives the consumer: handlers that are winding down still save their turns.
	wctx, stopWriter := context.WithCancel(context.WithoutCancel(ctx))
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		_ = s.writer.Run(wctx) // It only ever returns nil.
	}()
	defer func() {
		stopWriter()
		<-writerDone
	}()

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return s.consumer.Run(gctx) })
	g.Go(func() error { return s.deadLetters().Run(gctx) })
	g.Go(func() error { return s.budgetAlerts().Run(gctx) })
	g.Go(func() error { return s.destroyedTenants().Run(gctx) })
	g.Go(func() error { return s.deliverer.Run(gctx) })
	g.Go(func() error { return s.ServeQueries(gctx) })
	s.logger.Info("converger ready", "provider", s.provider.Name(), "concurrency", s.cfg.Concurrency)
	return g.Wait()
}

// announceProvider says which provider answers, loudly when it is the simulated one.
func (s *Service) announceProvider() {
	switch s.providerKind {
	case ProviderSimulated:
		msg := "NO LLM PROVIDER CONFIGURED: the converger uses the offline SIMULATED provider and every result is synthetic; " +
			"set CONVERGENCE_CONVERGER_OPENAI_API_KEY or CONVERGENCE_CONVERGER_ANTHROPIC_API_KEY, " +
			"or converger.provider=openai with converger.openai.base-url for a local server"
		if s.cfg.Provider == ProviderSimulated {
			msg = "SIMULATED LLM PROVIDER selected (converger.provider=simulated): every result is synthetic"
		}
		s.logger.Warn(msg, "provider", "simulated", "latency", s.cfg.Simulated.Latency, "scenario", s.cfg.Simulated.Scenario)
	case ProviderOpenAI:
		s.logger.Info("LLM provider", "provider", s.provider.Name(), "base_url", s.cfg.OpenAI.BaseURL, "model", s.cfg.OpenAI.Model)
	case ProviderAnthropic:
		s.logger.Info("LLM provider", "provider", s.provider.Name(), "base_url", s.cfg.Anthropic.BaseURL, "model", s.cfg.Anthropic.Model)
	default:
		s.logger.Info("LLM provider", "provider", s.provider.Name())
	}
}
