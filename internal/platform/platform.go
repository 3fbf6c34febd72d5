package platform

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/docker/docker/client"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/labstack/echo/v4"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/convergence-dev/convergence/internal/httpx"
	"github.com/convergence-dev/convergence/internal/natsauth"
	"github.com/convergence-dev/convergence/internal/natsx"
	"github.com/convergence-dev/convergence/internal/outbox"
	"github.com/convergence-dev/convergence/internal/pglocal"
	"github.com/convergence-dev/convergence/internal/pgrole"
	"github.com/convergence-dev/convergence/internal/seal"
	"github.com/convergence-dev/convergence/internal/telemetry"
	"github.com/convergence-dev/convergence/migrations"
	"github.com/convergence-dev/convergence/services/api"
	"github.com/convergence-dev/convergence/services/converger"
	"github.com/convergence-dev/convergence/services/converger/webhook"
	"github.com/convergence-dev/convergence/services/metering"
	"github.com/convergence-dev/convergence/services/provisioner"
	"github.com/convergence-dev/convergence/services/provisioner/egress"
)

// Run starts the process described by cfg and blocks until ctx is done or a part fails. It
// then stops everything it started, infrastructure last, and returns the first failure (nil
// after a clean stop).
func Run(ctx context.Context, cfg Config, logger *slog.Logger) (err error) {
	if cfg.DataDir != "" {
		if cfg.DataDir, err = filepath.Abs(cfg.DataDir); err != nil {
			return fmt.Errorf("data dir: %w", err)
		}
		if cfg.Provisioner.StateDir == "" {
			cfg.Provisioner.StateDir = filepath.Join(cfg.DataDir, "provisioner")
		}
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	targets, _ := cfg.Targets()
	// 0711: the local PostgreSQL runs as another user and must reach its folder inside.
	if err := os.MkdirAll(cfg.DataDir, 0o711); err != nil { //nolint:gosec // Search-only for others, see above.
		return fmt.Errorf("create data dir %s: %w; set CONVERGENCE_DATA_DIR to a writable directory", cfg.DataDir, err)
	}
	if slices.Contains(targets, TargetAPI) {
		if cfg.API.AdminToken, err = resolveAdminToken(cfg.API.AdminToken, cfg.DataDir, os.Stderr); err != nil {
			return err
		}
		if err := cfg.API.Validate(); err != nil {
			return err
		}
	}
	// Bind the HTTP ports first: a port in use is the most common start-up failure, and it is
	// better reported before a database is started.
	ln, err := httpx.Listen(ctx, cfg.HTTPAddr)
	if err != nil {
		return err
	}
	defer ln.Close()
	opsLn, err := httpx.Listen(ctx, cfg.OpsAddr)
	if err != nil {
		return fmt.Errorf("ops.addr: %w", err)
	}
	defer opsLn.Close()
	var adminLn net.Listener
	if cfg.AdminAddr != "" && slices.Contains(targets, TargetAPI) {
		if adminLn, err = httpx.Listen(ctx, cfg.AdminAddr); err != nil {
			return fmt.Errorf("admin.addr: %w", err)
		}
		defer adminLn.Close()
	}

	// Traces, when the OTEL_* variables ask for them, of service "convergence-api" and so on
	// ("convergence" for every target in one process).
	service := "convergence"
	if len(targets) == 1 {
		service += "-" + targets[0]
	}
	stopTracing, err := telemetry.StartTracing(ctx, service)
	if err != nil {
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := stopTracing(sctx); err != nil {
			logger.Warn("flush traces", "err", err)
		}
	}()

	infra, err := startInfra(ctx, cfg, targets, logger)
	if err != nil {
		return err
	}
	defer infra.stop(logger)

	reg := telemetry.NewRegistry()
	ready := &telemetry.Readiness{}
	for _, t := range targets {
		ready.Add("postgres-"+t, infra.pools[t].Ping)
	}
	ready.Add("nats", func(context.Context) error {
		for t, nc := range infra.conns {
			if s := nc.Status(); s != nats.CONNECTED {
				return fmt.Errorf("%s's nats connection is %s", t, s)
			}
		}
		return nil
	})
	if infra.docker != nil {
		ready.Add("docker", func(ctx context.Context) error {
			_, err := infra.docker.Ping(ctx)
			return err
		})
	}
	reg.MustRegister(ready.Collector())
	measured := httpx.Metrics(reg)
	e := httpx.NewEcho(logger)
	e.Use(measured)
	healthRoutes(e, ready)
	ops := httpx.NewEcho(logger)
	opsRoutes(ops, reg, ready, telemetry.NewAlertReceiver(logger, reg))
	servers := map[net.Listener]*echo.Echo{ln: e, opsLn: ops}
	var admin *echo.Echo // nil: the admin routes are on e
	if adminLn != nil {
		admin = httpx.NewEcho(logger)
		admin.Use(measured)
		servers[adminLn] = admin
	}

	type runner interface{ Run(context.Context) error }
	var services []runner
	for _, t := range targets {
		svc, err := newService(ctx, t, cfg, infra, e, admin, logger, reg)
		if err != nil {
			return fmt.Errorf("%s: %w", t, err)
		}
		services = append(services, svc)
		if r, ok := svc.(interface{ Ready(context.Context) error }); ok {
			ready.Add(t, r.Ready)
		}
	}
	g, gctx := errgroup.WithContext(ctx)
	for l, srv := range servers {
		g.Go(func() error { return httpx.Serve(gctx, srv, l) })
	}
	// Each service that writes events relays its own outbox, in its own schema.
	for _, t := range targets {
		if ob := infra.outboxes[t]; ob != nil {
			relay := outbox.NewRelay(ob, infra.js[t], outbox.RelayConfig{}, logger.With("service", t),
				prometheus.WrapRegistererWith(prometheus.Labels{"service": t}, reg))
			g.Go(func() error { return relay.Run(gctx) })
		}
	}
	for i, svc := range services {
		g.Go(func() error {
			if err := svc.Run(gctx); err != nil {
				return fmt.Errorf("%s: %w", targets[i], err)
			}
			return nil
		})
	}
	logger.Info("convergence started", "targets", targets, "http", ln.Addr().String(), "ops", opsLn.Addr().String(), "admin", cfg.AdminAddr)
	return g.Wait()
}

func newService(ctx context.Context, target string, cfg Config, infra *infra, e, admin *echo.Echo, logger *slog.Logger, reg *prometheus.Registry) (interface{ Run(context.Context) error }, error) {
	pool, ob, nc, js := infra.pools[target], infra.outboxes[target], infra.conns[target], infra.js[target]
	switch target {
	case TargetAPI:
		return api.New(cfg.API, api.Deps{Pool: pool, Outbox: ob, NC: nc, JS: js, Echo: e, AdminEcho: admin, Logger: logger, Registry: reg})
	case TargetProvisioner:
		id, err := provisioner.Installation(ctx, pool, cfg.Provisioner.StateDir)
		if err != nil {
			return nil, err
		}
		cfg.Provisioner.Runtime.Instance = id
		return provisioner.New(cfg.Provisioner, provisioner.Deps{Pool: pool, Outbox: ob, NC: nc, JS: js, Docker: infra.docker, Logger: logger, Registry: reg})
	case TargetConverger:
		keys, err := secretsKeyring(cfg)
		if err != nil {
			return nil, err
		}
		return converger.New(cfg.Converger, converger.Deps{Pool: pool, Outbox: ob, NC: nc, JS: js, Secrets: keys, Logger: logger, Registry: reg})
	case TargetMetering:
		return metering.New(cfg.Metering, metering.Deps{Pool: pool, NC: nc, JS: js, Logger: logger, Registry: reg})
	}
	return nil, fmt.Errorf("unknown target %q", target)
}

// healthRoutes serves /healthz and /readyz on the listener everyone reaches, tenants included:
// /readyz says only whether the process is ready, since the reasons name internal hosts and
// ports.
func healthRoutes(e *echo.Echo, ready *telemetry.Readiness) {
	e.GET("/healthz", healthz)
	e.GET("/readyz", func(c echo.Context) error {
		if len(ready.Failures(c.Request().Context())) > 0 {
			return c.JSON(http.StatusServiceUnavailable, map[string]any{"status": "not ready"})
		}
		return c.JSON(http.StatusOK, map[string]any{"status": "ready"})
	})
}

// opsRoutes serves the operators' listener: /healthz, /readyz with the checks that fail and
// why, /metrics, and /alerts, the receiver for Alertmanager's webhook.
func opsRoutes(e *echo.Echo, reg *prometheus.Registry, ready *telemetry.Readiness, alerts *telemetry.AlertReceiver) {
	e.GET("/healthz", healthz)
	e.GET("/readyz", func(c echo.Context) error {
		failed := ready.Failures(c.Request().Context())
		if len(failed) > 0 {
			return c.JSON(http.StatusServiceUnavailable, map[string]any{"status": "not ready", "failing": failed})
		}
		return c.JSON(http.StatusOK, map[string]any{"status": "ready"})
	})
	e.GET("/metrics", echo.WrapHandler(telemetry.MetricsHandler(reg)))
	e.Match([]string{http.MethodGet, http.MethodPost}, "/alerts", echo.WrapHandler(alerts))
}

func healthz(c echo.Context) error { return c.JSON(http.StatusOK, map[string]any{"status": "ok"}) }

// Migrate applies pending migrations to the configured database (a local one in the data dir
// when none is configured) and returns.
func Migrate(ctx context.Context, cfg Config, logger *slog.Logger) error {
	return withDatabase(ctx, cfg, logger, "", func(dbURL string, _ *pgxpool.Pool) error {
		if err := migrations.Up(ctx, dbURL); err != nil {
			return err
		}
		logger.Info("migrations applied")
		return nil
	})
}

// Reconcile compares the usage ledger with the converger's task records over a period, repairs
// the gaps when asked, and writes the report to w. It returns metering.ErrUnreconciled when
// gaps remain, so a scheduled run can exit non-zero. The converger answers for its records on
// the running platform's NATS: NATS_URL (as -nats.creds's user), or the embedded server's
// -nats.listen address (as a metering user of the data dir's authority).
func Reconcile(ctx context.Context, cfg Config, opts metering.ReconcileOptions, w io.Writer, logger *slog.Logger) error {
	natsURL := cfg.NATSURL
	var auth *natsauth.Authority
	if natsURL == "" {
		if cfg.NATSListen == "" {
			return errors.New("reconcile asks the running platform's converger for its task records: set NATS_URL, or -nats.listen to where the platform's embedded NATS listens")
		}
		natsURL = "nats://" + cfg.NATSListen
		var err error
		if auth, err = natsauth.LoadOrCreate(natsAuthDir(cfg)); err != nil {
			return err
		}
	}
	_, nopts, err := natsOptions(cfg, auth, natsauth.Metering, "convergence-reconcile")
	if err != nil {
		return err
	}
	nc, err := natsx.Connect(natsURL, nil, "convergence-reconcile", logger, nopts...)
	if err != nil {
		return fmt.Errorf("%w; is the platform running?", err)
	}
	defer nc.Close()
	return withDatabase(ctx, cfg, logger, TargetMetering, func(_ string, pool *pgxpool.Pool) error {
		return metering.Reconcile(ctx, cfg.Metering, pool, nc, opts, w)
	})
}

// Reseal seals every webhook secret again under the first key of the secrets keyring, after a
// new key was put first, and writes how many it changed to w.
func Reseal(ctx context.Context, cfg Config, w io.Writer, logger *slog.Logger) error {
	keys, err := secretsKeyring(cfg)
	if err != nil {
		return err
	}
	return withDatabase(ctx, cfg, logger, TargetConverger, func(_ string, pool *pgxpool.Pool) error {
		n, err := webhook.NewSecrets(keys).Reseal(ctx, pool)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(w, "resealed %d webhook secret rows under the keyring's first key; keys after it may now be removed\n", n)
		return err
	})
}

// EgressPolicy names the tenants' egress policy (firewall table and bridge prefix) of the
// installation whose provisioner state dir cfg points at: -provisioner.state-dir, or
// <data-dir>/provisioner, where the provisioner keeps its instance id. For `convergence egress`.
func EgressPolicy(cfg Config) (egress.Policy, error) {
	dir := cfg.Provisioner.StateDir
	if dir == "" {
		dir = filepath.Join(cfg.DataDir, "provisioner")
	}
	id, err := os.ReadFile(filepath.Join(dir, provisioner.InstanceFile))
	if err != nil {
		return egress.Policy{}, fmt.Errorf("the installation's instance id: %w; point -provisioner.state-dir (or -data-dir) at the state of a provisioner that has run", err)
	}
	rc := cfg.Provisioner.Runtime
	rc.Instance = strings.TrimSpace(string(id))
	return rc.Egress(), nil
}

// secretsKeyring is the keyring of -secrets.key-file, or the one kept in the data dir.
func secretsKeyring(cfg Config) (*seal.Keyring, error) {
	if cfg.SecretsKeyFile != "" {
		return seal.LoadFile(cfg.SecretsKeyFile)
	}
	return seal.LoadOrCreateFile(filepath.Join(cfg.DataDir, "secrets.keys"))
}

// withDatabase runs fn on the configured database, or on a local one it starts in the data dir
// and stops afterwards, for the commands that need only the database. The pool acts as
// service's database role; with service empty, as the login itself.
func withDatabase(ctx context.Context, cfg Config, logger *slog.Logger, service string, fn func(dbURL string, pool *pgxpool.Pool) error) error {
	dbURL := cfg.DatabaseURL
	var pg *pglocal.Server
	if dbURL == "" {
		var err error
		if pg, err = pglocal.Start(ctx, localPostgres(cfg, logger)); err != nil {
			return fmt.Errorf("local postgres: %w", err)
		}
		defer func() { _ = pg.Stop(context.WithoutCancel(ctx)) }()
		dbURL = pg.URL()
	}
	if u := cfg.ServiceDatabaseURLs.For(service); u != "" {
		dbURL = u
	}
	if pg != nil && service != "" {
		var err error
		if dbURL, err = pg.Login(ctx, pgrole.Role(service)); err != nil {
			return err
		}
	}
	pool, err := connectDB(ctx, dbURL, cfg.DatabaseURL != "", service)
	if err != nil {
		return err
	}
	defer pool.Close()
	return fn(dbURL, pool)
}

// localPostgres is the PostgreSQL started in the data dir when no DATABASE_URL is given. It
// takes passwords only (scram-sha-256), kept in the data dir; each service logs in as its own
// role with a password of its own.
func localPostgres(cfg Config, logger *slog.Logger) pglocal.Config {
	return pglocal.Config{
		Dir:          filepath.Join(cfg.DataDir, "postgres"),
		PasswordsDir: filepath.Join(cfg.DataDir, "postgres-passwords"),
		Logger:       logger,
		// Each service has a pool of its own, of up to 20 connections.
		Settings: map[string]string{"max_connections": "200"},
	}
}

// infra is the infrastructure one process runs on.
type infra struct {
	pg *pglocal.Server // nil when DATABASE_URL is given
	// pools holds a pool per service the process runs, acting as that service's role.
	pools map[string]*pgxpool.Pool
	// outboxes holds the outbox of each service the process runs that writes events.
	outboxes map[string]*outbox.Outbox
	embedded *natsx.Embedded // nil when NATS_URL is given
	// conns holds a NATS connection per service the process runs, each as that service's user.
	conns  map[string]*nats.Conn
	js     map[string]jetstream.JetStream
	docker *client.Client // nil unless the process runs the provisioner
}

// eventWriters are the services that write events, each to the outbox in its own schema.
var eventWriters = []string{TargetAPI, TargetProvisioner, TargetConverger}

// startInfra starts PostgreSQL and NATS, or connects to the ones configured, and opens a pool
// for each service of targets. On error it stops what it had started.
func startInfra(ctx context.Context, cfg Config, targets []string, logger *slog.Logger) (_ *infra, err error) {
	in := &infra{pools: map[string]*pgxpool.Pool{}, outboxes: map[string]*outbox.Outbox{},
		conns: map[string]*nats.Conn{}, js: map[string]jetstream.JetStream{}}
	defer func() {
		if err != nil {
			in.stop(logger)
		}
	}()

	dbURL := cfg.DatabaseURL
	if dbURL == "" {
		in.pg, err = pglocal.Start(ctx, localPostgres(cfg, logger))
		if err != nil {
			return nil, fmt.Errorf("local postgres: %w", err)
		}
		dbURL = in.pg.URL()
	}
	// The login is checked first, so an unreachable database is reported as such rather than
	// as a failed migration or role.
	check, err := connectDB(ctx, dbURL, cfg.DatabaseURL != "", "")
	if err != nil {
		return nil, err
	}
	check.Close()
	if cfg.Migrate {
		if err := migrations.Up(ctx, dbURL); err != nil {
			return nil, err
		}
	}
	for _, t := range targets {
		u := cfg.ServiceDatabaseURLs.For(t)
		if u == "" {
			u = dbURL
		}
		if in.pg != nil {
			if u, err = in.pg.Login(ctx, pgrole.Role(t)); err != nil {
				return nil, fmt.Errorf("%s: %w", t, err)
			}
		}
		if in.pools[t], err = connectDB(ctx, u, cfg.DatabaseURL != "", t); err != nil {
			return nil, fmt.Errorf("%s: %w", t, err)
		}
		if slices.Contains(eventWriters, t) {
			in.outboxes[t] = outbox.New(in.pools[t])
		}
	}

	if err := in.startNATS(ctx, cfg, targets, logger); err != nil {
		return nil, err
	}
	if slices.Contains(targets, TargetProvisioner) {
		if in.docker, err = connectDocker(ctx); err != nil {
			return nil, err
		}
	}
	return in, nil
}

// startNATS starts the embedded NATS server, or finds the one configured, makes sure the
// platform's streams exist, and connects each service of targets as its own user.
func (in *infra) startNATS(ctx context.Context, cfg Config, targets []string, logger *slog.Logger) error {
	var auth *natsauth.Authority
	if cfg.NATSURL == "" {
		var err error
		if auth, err = natsauth.LoadOrCreate(natsAuthDir(cfg)); err != nil {
			return err
		}
		ec := natsx.EmbeddedConfig{StoreDir: filepath.Join(cfg.DataDir, "jetstream"), DontListen: cfg.NATSListen == "", Auth: auth}
		if cfg.NATSListen != "" {
			if ec.Host, ec.Port, err = natsx.SplitListen(cfg.NATSListen); err != nil {
				return fmt.Errorf("nats.listen: %w", err)
			}
		}
		if in.embedded, err = natsx.StartEmbedded(ec, logger); err != nil {
			return err
		}
	} else if cfg.NATSCreds == "" {
		logger.Warn("connecting to NATS_URL without credentials: only a server without authentication accepts that, and every process on it may then do anything; set CONVERGENCE_NATS_CREDS")
	}
	// The streams, as the admin user when this process issues users, else as the configured
	// user if it is an admin; a service user may not manage streams, and the NATS server's own
	// process (`convergence nats`) keeps them instead.
	role, opts, err := natsOptions(cfg, auth, natsauth.Admin, "convergence-streams")
	if err != nil {
		return err
	}
	if role == natsauth.Admin {
		if err := natsx.SetUpStreams(ctx, cfg.NATSURL, in.embedded, natsx.KeepReplicas, logger, opts...); err != nil {
			return fmt.Errorf("%w; is JetStream enabled on the server at NATS_URL?", err)
		}
	}
	for _, t := range targets {
		name := "convergence-" + t
		got, opts, err := natsOptions(cfg, auth, natsauth.Role(t), name)
		if err != nil {
			return err
		}
		if got != natsauth.Admin && got != natsauth.Role(t) {
			return fmt.Errorf("nats.creds %s is a %s user, which may not do what %s does: give each target its own credentials (convergence nats creds %s)", cfg.NATSCreds, got, t, t)
		}
		nc, err := natsx.Connect(cfg.NATSURL, in.embedded, name, logger, opts...)
		if err != nil {
			return err
		}
		in.conns[t] = nc
		if in.js[t], err = jetstream.New(in.conns[t]); err != nil {
			return fmt.Errorf("jetstream: %w", err)
		}
	}
	return nil
}

// natsOptions returns how a connection of this process acting as role connects: as a user of
// role issued by auth when the process holds the authority, else as the user of -nats.creds
// (whatever its role), else anonymously (an admin's rights on a server without
// authentication).
func natsOptions(cfg Config, auth *natsauth.Authority, role natsauth.Role, name string) (natsauth.Role, []nats.Option, error) {
	switch {
	case auth != nil:
		opts, err := auth.Connect(role, name)
		return role, opts, err
	case cfg.NATSCreds != "":
		return natsauth.FileOptions(cfg.NATSCreds)
	}
	return natsauth.Admin, nil, nil
}

// natsAuthDir is where the embedded NATS server's authority is kept.
func natsAuthDir(cfg Config) string { return natsauth.DirIn(cfg.DataDir) }

// connectDB opens a pool acting as service's database role (none when service is empty) and
// checks that the database answers, with an error that says what to do when it does not.
func connectDB(ctx context.Context, dbURL string, fromEnv bool, service string) (*pgxpool.Pool, error) {
	shown := redactURL(dbURL)
	pcfg, err := pgxpool.ParseConfig(dbURL)
	if err != nil {
		return nil, fmt.Errorf("database URL %s is not valid: %w; check DATABASE_URL", shown, err)
	}
	if service != "" {
		if err := pgrole.Configure(pcfg, service); err != nil {
			return nil, err
		}
	}
	pcfg.MaxConns = max(pcfg.MaxConns, 20)
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, fmt.Errorf("database at %s: %w", shown, err)
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := pool.Ping(pctx); err != nil {
		pool.Close()
		hint := "the local PostgreSQL did not answer; remove the data dir's postgres folder if it is damaged"
		if fromEnv {
			hint = "check DATABASE_URL, or unset it to use a local PostgreSQL started in the data dir"
		}
		// pgx lists every address it tried on lines of their own; keep the error on one line.
		reason := strings.ReplaceAll(strings.ReplaceAll(err.Error(), "\n\t", "; "), "\n", "; ")
		return nil, fmt.Errorf("database at %s is not reachable: %s; %s", shown, reason, hint)
	}
	return pool, nil
}

// connectDocker connects to the Docker engine named by the environment (DOCKER_HOST, or the
// local socket) and checks that it answers.
func connectDocker(ctx context.Context) (*client.Client, error) {
	cli, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		return nil, fmt.Errorf("docker client: %w; check DOCKER_HOST", err)
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	ping, err := cli.Ping(pctx)
	if err != nil {
		_ = cli.Close()
		return nil, fmt.Errorf("the Docker engine at %s does not answer: %w; start it, set DOCKER_HOST, or run without the provisioner target", cli.DaemonHost(), err)
	}
	// Settle the API version now, before the client is shared: left to the first calls, the
	// negotiation writes the version while Events (which reads it without the client's lock)
	// may be starting on another goroutine.
	cli.NegotiateAPIVersionPing(ping)
	return cli, nil
}

func (in *infra) stop(logger *slog.Logger) {
	if in.docker != nil {
		_ = in.docker.Close()
	}
	for _, nc := range in.conns {
		if err := nc.Drain(); err != nil {
			nc.Close()
		}
	}
	for _, nc := range in.conns {
		for nc.IsDraining() {
			time.Sleep(10 * time.Millisecond)
		}
	}
	if in.embedded != nil {
		in.embedded.Shutdown()
	}
	for _, pool := range in.pools {
		pool.Close()
	}
	if in.pg != nil {
		sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := in.pg.Stop(sctx); err != nil {
			logger.Error("stop local postgres", "err", err)
		}
	}
}

// redactURL hides the password of a database URL so it can be shown.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Redacted()
}
