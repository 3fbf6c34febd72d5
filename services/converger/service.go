// Package converger runs dual-agent convergence: it consumes converge.request, runs the loop of
// two role-playing agents against the configured LLM provider, persists every round, and
// publishes converge.completed or converge.failed.
package converger

import (
	"context"
	"flag"
	"log/slog"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/convergence-dev/convergence/internal/outbox"
)

// Config is what the converger reads at start.
type Config struct{}

// RegisterFlags registers the converger's flags on fs, prefixed "converger.".
func (c *Config) RegisterFlags(fs *flag.FlagSet) {}

// Validate says what is wrong with the config.
func (c Config) Validate() error { return nil }

// Deps are the converger's dependencies; the caller owns and closes them.
type Deps struct {
	Pool     *pgxpool.Pool
	Outbox   *outbox.Outbox
	NC       *nats.Conn
	JS       jetstream.JetStream
	Logger   *slog.Logger
	Registry prometheus.Registerer
}

// Service is the converger.
type Service struct {
	cfg    Config
	deps   Deps
	logger *slog.Logger
}

// New wires the converger; it starts nothing.
func New(cfg Config, deps Deps) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Service{cfg: cfg, deps: deps, logger: deps.Logger.With("service", "converger")}, nil
}

// Run blocks until ctx is done or the service fails.
func (s *Service) Run(ctx context.Context) error {
	s.logger.Info("converger ready")
	<-ctx.Done()
	return nil
}
