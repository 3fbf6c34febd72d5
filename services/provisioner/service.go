// Package provisioner runs tenants as hardened Docker containers: it consumes tenant.spawn and
// tenant.destroy, drives the Docker engine, watches container health, reconciles the database
// with what Docker runs, and publishes tenant.lifecycle facts.
package provisioner

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

// Config is what the provisioner reads at start.
type Config struct{}

// RegisterFlags registers the provisioner's flags on fs, prefixed "provisioner.".
func (c *Config) RegisterFlags(fs *flag.FlagSet) {}

// Validate says what is wrong with the config.
func (c Config) Validate() error { return nil }

// Deps are the provisioner's dependencies; the caller owns and closes them.
type Deps struct {
	Pool     *pgxpool.Pool
	Outbox   *outbox.Outbox
	NC       *nats.Conn
	JS       jetstream.JetStream
	Logger   *slog.Logger
	Registry prometheus.Registerer
}

// Service is the provisioner.
type Service struct {
	cfg    Config
	deps   Deps
	logger *slog.Logger
}

// New wires the provisioner; it starts nothing.
func New(cfg Config, deps Deps) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Service{cfg: cfg, deps: deps, logger: deps.Logger.With("service", "provisioner")}, nil
}

// Run blocks until ctx is done or the service fails.
func (s *Service) Run(ctx context.Context) error {
	s.logger.Info("provisioner ready")
	<-ctx.Done()
	return nil
}
