// Package metering keeps the usage ledger: it consumes convergence results and tenant lifecycle
// facts, records every token and container-second exactly once, prices them, and serves
// aggregates per tenant and organization.
package metering

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

// Config is what the metering reads at start.
type Config struct{}

// RegisterFlags registers the metering's flags on fs, prefixed "metering.".
func (c *Config) RegisterFlags(fs *flag.FlagSet) {}

// Validate says what is wrong with the config.
func (c Config) Validate() error { return nil }

// Deps are the metering's dependencies; the caller owns and closes them.
type Deps struct {
	Pool     *pgxpool.Pool
	Outbox   *outbox.Outbox
	NC       *nats.Conn
	JS       jetstream.JetStream
	Logger   *slog.Logger
	Registry prometheus.Registerer
}

// Service is the metering.
type Service struct {
	cfg    Config
	deps   Deps
	logger *slog.Logger
}

// New wires the metering; it starts nothing.
func New(cfg Config, deps Deps) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Service{cfg: cfg, deps: deps, logger: deps.Logger.With("service", "metering")}, nil
}

// Run blocks until ctx is done or the service fails.
func (s *Service) Run(ctx context.Context) error {
	s.logger.Info("metering ready")
	<-ctx.Done()
	return nil
}
