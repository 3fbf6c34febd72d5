// Package provisioner runs tenants as hardened Docker containers: it consumes tenant.spawn and
// tenant.destroy, drives the Docker engine through a [runtime.Runtime] ([runtime.Docker], or
// [runtime.Swarm] for a service per tenant on a swarm), watches container health,
// reconciles the database with what Docker runs, serves live status and logs to the API
// ([live]), and publishes tenant.lifecycle facts through the outbox.
//
// The database is the source of truth for what should exist; the engine for what does. Every
// state change is written with its lifecycle fact in one transaction. Spawns and destroys are
// idempotent: a redelivered command finds the tenant already in its target state, or drives
// the same container again (Ensure converges on one container per spec).
package provisioner

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/docker/docker/client"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/convergence-dev/convergence/internal/leader"
	"github.com/convergence-dev/convergence/internal/live"
	"github.com/convergence-dev/convergence/internal/natsrpc"
	"github.com/convergence-dev/convergence/internal/outbox"
	"github.com/convergence-dev/convergence/internal/periodic"
	"github.com/convergence-dev/convergence/internal/telemetry"
	"github.com/convergence-dev/convergence/pkg/events"
	"github.com/convergence-dev/convergence/pkg/events/consumer"
	"github.com/convergence-dev/convergence/services/provisioner/egress"
	"github.com/convergence-dev/convergence/services/provisioner/keyring"
	"github.com/convergence-dev/convergence/services/provisioner/ports"
	"github.com/convergence-dev/convergence/services/provisioner/runtime"
)

// Deps are the provisioner's dependencies; the caller owns and closes them.
type Deps struct {
	Pool   *pgxpool.Pool
	Outbox *outbox.Outbox
	NC     *nats.Conn
	JS     jetstream.JetStream
	// Docker is the engine tenants run on (client.NewClientWithOpts(client.FromEnv,
	// client.WithAPIVersionNegotiation())). Required.
	Docker   client.APIClient
	Logger   *slog.Logger
	Registry prometheus.Registerer
}

// Service is the provisioner.
type Service struct {
	cfg       Config
	deps      Deps
	log       *slog.Logger
	rt        runtime.Runtime
	locks     *tenantLocks
	probes    probeFailures
	metrics   *metrics
	portFirst int
	portLast  int
	// keys is set at the start of Run.
	keys *keyring.Keyring
	// egress is the tenants' egress policy Run installed, nil when it is off.
	egress *egress.Policy
	// started is set once Run has registered the sealing key and the port pool, from when
	// the API can hand tenants' keys to this provisioner.
	started atomic.Bool
	// queries answers the other services' questions on the bus.
	queries *natsrpc.Server
	// hooks let tests stop the service at chosen points; nil in production.
	hooks hooks
}

// hooks are points tests can stop the provisioner at.
type hooks struct {
	// afterEnsure runs after a tenant's container was created and started, before the wait
	// for its health and the database update.
	afterEnsure func(envID int64)
}

// New wires the provisioner; it starts nothing and makes no call to the engine.
func New(cfg Config, deps Deps) (*Service, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	switch {
	case cfg.StateDir == "":
		return nil, errors.New("provisioner.state-dir is empty: set it to a writable directory, such as <data-dir>/provisioner")
	case deps.Docker == nil:
		return nil, errors.New("no Docker client: the process must pass one in Deps.Docker")
	case deps.Pool == nil || deps.Outbox == nil || deps.NC == nil || deps.JS == nil || deps.Logger == nil || deps.Registry == nil:
		return nil, errors.New("dependencies missing: pass Pool, Outbox, NC, JS, Logger and Registry")
	}
	log := deps.Logger.With("service", "provisioner")
	rt, err := newRuntime(cfg, deps, log)
	if err != nil {
		return nil, err
	}
	first, last, _ := parsePorts(cfg.Ports) // Validate checked it.
	s := &Service{
		cfg:       cfg,
		deps:      deps,
		log:       log,
		rt:        rt,
		locks:     newTenantLocks(),
		metrics:   newMetrics(deps.Registry, rt),
		portFirst: first,
		portLast:  last,
	}
	s.queries = s.queryServer()
	return s, nil
}

// newRuntime makes the runtime cfg.RuntimeKind names, on the engine of deps.Docker.
func newRuntime(cfg Config, deps Deps, log *slog.Logger) (runtime.Runtime, error) {
	if cfg.RuntimeKind == RuntimeSwarm {
		return runtime.NewSwarm(deps.Docker, cfg.Runtime, cfg.Swarm, log)
	}
	return runtime.NewDocker(deps.Docker, cfg.Runtime, log)
}

// Runtime returns the runtime the service drives.
func (s *Service) Runtime() runtime.Runtime { return s.rt }

// Run starts the provisioner and blocks until ctx is done or a part fails; then it stops
// taking commands, lets the work in flight end (a spawn cut short is redelivered and resumed
// by the next start), and returns.
//
// At start it checks that the engine answers, loads or creates the sealing key and registers
// it, brings the port pool to the configured range, installs the tenants' egress policy in the
// host's firewall, and subscribes to engine events. Then it runs the command consumer, the
// live status and logs server, the health watcher and the reconciler, whose first pass
// resumes the tenants a previous run left half made.
func (s *Service) Run(ctx context.Context) error {
	if err := s.start(ctx); err != nil {
		if ctx.Err() != nil {
			return nil // Stopped while starting.
		}
		return err
	}
	if err := s.applyEgressPolicy(); err != nil {
		return err
	}
	s.started.Store(true)
	defer s.started.Store(false)

	g, gctx := errgroup.WithContext(ctx)
	cons := consumer.New(s.deps.JS, consumer.Config{
		Name:        events.ConsumerProvisioner,
		Stream:      events.StreamTenantCommands,
		Subjects:    []string{events.SubjectTenantSpawn, events.SubjectTenantDestroy},
		Concurrency: s.cfg.Concurrency,
	}, s.handle, s.log, telemetry.NewConsumerMetrics(s.deps.Registry))
	g.Go(func() error {
		// A stop during the consumer's creation is a clean stop, not its failure.
		if err := cons.Run(gctx); err != nil && gctx.Err() == nil {
			return err
		}
		return nil
	})
	g.Go(func() error { return live.NewServer(s.deps.NC, liveSource{s.rt}, s.log).Run(gctx) })
	g.Go(func() error { return s.queries.Run(gctx) })
	g.Go(func() error {
		// Every replica keeps the firewall of its own host.
		periodic.Every(gctx, s.cfg.ReconcileInterval, s.keepEgressPolicy)
		return nil
	})
	g.Go(func() error {
		return leader.Election{Role: leaderRole}.Run(gctx, s.deps.Pool, leader.NewMetrics(s.deps.Registry), s.log, s.lead)
	})
	s.log.Info("provisioner ready", "ports", s.cfg.Ports, "concurrency", s.cfg.Concurrency, "stateDir", s.cfg.StateDir, "instance", s.cfg.Runtime.Instance)
	return g.Wait()
}

// leaderRole is the provisioner's election: its leader watches health and reconciles.
const leaderRole = "provisioner"

// lead runs, for one term as the replicas' leader, what must run once however many
// provisioners there are: the health watcher and the reconciler, whose first pass resumes the
// tenants a previous leader left half made. Replicas that do not lead still spawn and destroy
// tenants as the commands reach them.
func (s *Service) lead(ctx context.Context) {
	// Events are subscribed before the first reconcile, so nothing that happens during it
	// goes unseen.
	evs, evErrs := s.rt.Events(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { newWatcher(s).run(ctx, evs, evErrs) })
	s.reconcile(ctx, true)
	periodic.Every(ctx, s.cfg.ReconcileInterval, func() { s.reconcile(ctx, false) })
	wg.Wait()
}

// ServeQueries prepares what admissions need (the sealing key, the port pool) and answers the
// questions other services ask on the bus until ctx is done, without running any tenant: Run
// serves them beside its work, and tests that play the runtime's part serve them alone.
func (s *Service) ServeQueries(ctx context.Context) error {
	if err := s.start(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	return s.queries.Run(ctx)
}

// Ready reports whether the provisioner has started (its sealing key registered, its port pool
// in place) and answers admissions on the bus. The process's /readyz includes it.
func (s *Service) Ready(context.Context) error {
	if !s.started.Load() {
		return errors.New("the provisioner is starting")
	}
	return s.queries.Serving()
}

// start prepares what the service needs before it takes work.
func (s *Service) start(ctx context.Context) error {
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := s.deps.Docker.Ping(pctx); err != nil {
		return fmt.Errorf("docker engine does not answer: %w; start dockerd, or point DOCKER_HOST at a running engine", err)
	}
	if m, ok := s.rt.(interface{ CheckManager(context.Context) error }); ok {
		if err := m.CheckManager(pctx); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(s.composeDir(), 0o700); err != nil {
		return fmt.Errorf("create %s: %w; set provisioner.state-dir to a writable directory", s.composeDir(), err)
	}
	keys, err := keyring.LoadOrCreate(s.cfg.KeyFile)
	if err != nil {
		return fmt.Errorf("sealing key: %w", err)
	}
	if err := keys.Register(ctx, s.deps.Pool); err != nil {
		return err
	}
	s.keys = keys
	free, err := ports.Sync(ctx, s.deps.Pool, s.portFirst, s.portLast)
	if err != nil {
		return err
	}
	s.log.Info("port pool ready", "first", s.portFirst, "last", s.portLast, "free", free, "keyId", keys.ID())
	return nil
}

// applyEgressPolicy installs the installation's egress rules in the host's firewall, before
// any tenant of this run starts. They match tenant bridges by name, so they hold for every
// tenant made later, and stay when the provisioner stops: its tenants go on running.
func (s *Service) applyEgressPolicy() error {
	if s.cfg.EgressPolicy == EgressOff {
		s.log.Warn("tenant egress policy is off: tenants reach the host's ports and the internet")
		return nil
	}
	fw, ok := s.rt.(firewalled)
	if !ok {
		s.log.Warn("the host's firewall cannot hold swarm tenants to their egress class: they reach what swarm's docker_gwbridge lets them (the host's ports and the internet), except that tenants of class none get an internal network when ports go through the routing mesh")
		return nil
	}
	p := fw.Egress()
	port, err := s.cfg.tenantAPIPort()
	if err != nil {
		return err
	}
	p.APIPort = port
	p.Resolvers = egress.Resolvers("/etc/resolv.conf")
	if err := p.Apply(); err != nil {
		return fmt.Errorf("tenant egress policy: %w; provisioner.egress-policy=%s runs tenants without one", err, EgressOff)
	}
	s.egress = &p
	s.log.Info("tenant egress policy installed", "table", "inet "+p.Table, "bridges", p.Prefix+"*", "apiPort", p.APIPort, "resolvers", p.Resolvers)
	return nil
}

// firewalled is a runtime whose tenant networks are bridges on this host, named so that the
// installation's egress rules match them ([runtime.Docker]).
type firewalled interface {
	Egress() egress.Policy
}

// keepEgressPolicy installs the egress rules again when the host's firewall no longer holds
// them (a firewall reload, `nft flush ruleset`, a hand edit); every replica calls it each
// ReconcileInterval, and counts each time it had to.
func (s *Service) keepEgressPolicy() {
	if s.egress == nil {
		return
	}
	holds, err := s.egress.Holds()
	if err == nil && holds {
		return
	}
	s.metrics.reconcileActions.WithLabelValues(actionReinstallEgressPolicy).Inc()
	s.log.Warn("the tenants' egress rules are gone from the host's firewall or changed; installing them again", "table", "inet "+s.egress.Table, "err", err)
	if err := s.egress.Apply(); err != nil {
		s.log.Error("install the tenants' egress rules again", "table", "inet "+s.egress.Table, "err", err)
	}
}

// composeDir is where tenant compose files live.
func (s *Service) composeDir() string { return filepath.Join(s.cfg.StateDir, "tenants") }
