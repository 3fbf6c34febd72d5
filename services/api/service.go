// Package api is the platform's HTTP API: it authenticates callers (the admin token, tenant API
// keys), validates requests, writes each request and its outbox event in one transaction, and
// answers. Reads (status, logs, tasks, usage) and streams are served from the database and
// JetStream.
package api

import (
	"context"
	"errors"
	"flag"
	"log/slog"
	"net/http"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/labstack/echo/v4"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/convergence-dev/convergence/internal/httpx"
	"github.com/convergence-dev/convergence/internal/outbox"
	"github.com/convergence-dev/convergence/internal/taskspec"
	"github.com/convergence-dev/convergence/internal/telemetry"
)

// Config is what the API reads at start.
type Config struct {
	// AdminToken authenticates platform operators. Required.
	AdminToken string
	// MaxBodyBytes bounds every request body.
	MaxBodyBytes int64
	// Converge configures the convergence endpoints; zero fields take their defaults.
	Converge ConvergeConfig
	// Plans is a plan file (plans.go) whose plans replace the built-in ones of the same name
	// and add others; empty keeps the built-in plans.
	Plans string
	// PlansReload is how often the plan file is checked for changes; 0 never checks.
	PlansReload time.Duration
}

// RegisterFlags registers the API's flags on fs, prefixed "api.".
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.Int64Var(&c.MaxBodyBytes, "api.max-body-bytes", 1<<20, "largest request body the API accepts, in bytes")
	fs.StringVar(&c.Plans, "plans", "", "plan file (JSON) whose plans replace the built-in ones of the same name and add others; empty keeps the built-in plans")
	fs.DurationVar(&c.PlansReload, "plans-reload", 30*time.Second, "how often the plan file is checked for changes; 0 never")
	c.Converge.RegisterFlags(fs)
}

// Validate says what is wrong with the config.
func (c Config) Validate() error {
	switch {
	case len(c.AdminToken) < 16:
		return errors.New("admin token must be at least 16 characters: set CONVERGENCE_ADMIN_TOKEN, or leave it unset to have one generated")
	case c.MaxBodyBytes < 1024:
		return errors.New("api.max-body-bytes must be at least 1024")
	case c.PlansReload < 0:
		return errors.New("plans-reload must not be negative")
	}
	return c.Converge.Validate()
}

// Deps are the API's dependencies; the caller owns and closes them.
type Deps struct {
	Pool   *pgxpool.Pool
	Outbox *outbox.Outbox
	NC     *nats.Conn
	JS     jetstream.JetStream
	Echo   *echo.Echo
	// AdminEcho, when set, serves the operators' routes instead of Echo: a listener of their
	// own (-admin.addr), which tenants need not reach.
	AdminEcho *echo.Echo
	Logger    *slog.Logger
	Registry  prometheus.Registerer
}

// Service is the HTTP API. Its routes are served by the process's HTTP server.
type Service struct {
	cfg    Config
	deps   Deps
	logger *slog.Logger
	// adminID names the admin token in the audit log (adminTokenID).
	adminID string
	plans   *plans
	// thresholds counts the budget thresholds told of, by level: "approaching" below the
	// limit, "limit" at it or over.
	thresholds *prometheus.CounterVec
}

// New wires the API and registers its routes on deps.Echo (and deps.AdminEcho); it starts
// nothing.
func New(cfg Config, deps Deps) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Service{
		cfg:     cfg,
		deps:    deps,
		logger:  deps.Logger.With("service", "api"),
		adminID: adminTokenID(cfg.AdminToken),
		thresholds: telemetry.Register(deps.Registry, prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: telemetry.Namespace, Subsystem: "api", Name: "budget_thresholds_total",
			Help: "Budget thresholds reached and told of (event, webhook), by level: approaching (below the limit) or limit.",
		}, []string{"level"})),
	}
	for _, level := range []string{"approaching", "limit"} {
		s.thresholds.WithLabelValues(level)
	}
	conv, tasks := s.convergeConfig(), taskspec.DefaultLimits()
	platform := planLimits{MaxTenants: maxMaxTenants, RequestsPerMinute: conv.RateLimit.CreatePerMinute, Burst: conv.RateLimit.CreateBurst,
		TasksInFlight: conv.MaxTenantTasks, MaxRounds: tasks.MaxRoundsCap, Models: []string{"*"}}
	var err error
	if s.plans, err = newPlans(cfg.Plans, platform, tasks.MaxRoundsCap, s.logger, deps.Registry); err != nil {
		return nil, err
	}
	s.routes(deps.Echo)
	if err := docsRoutes(deps.Echo); err != nil {
		return nil, err
	}
	return s, nil
}

// Run records the keys the provisioner issues (keyFacts) and when tasks end (taskEnds), forgets
// old idempotency keys, gives back stale budget reservations, tells of budget thresholds reached
// and reloads the plan file, until ctx is done. The routes are served by the process's HTTP
// server.
func (s *Service) Run(ctx context.Context) error {
	s.logger.Info("api ready")
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return s.keyFacts().Run(gctx) })
	g.Go(func() error { return s.taskEnds().Run(gctx) })
	g.Go(func() error { return s.forgetKeys(gctx) })
	g.Go(func() error { s.sweepReservations(gctx); return nil })
	g.Go(func() error { s.watchBudgetAlerts(gctx); return nil })
	if s.cfg.Plans != "" && s.cfg.PlansReload > 0 {
		g.Go(func() error { s.plans.watch(gctx, s.cfg.PlansReload); return nil })
	}
	if err := g.Wait(); err != nil && ctx.Err() == nil {
		return err
	}
	return nil
}

// routes registers every endpoint. Operators authenticate with the admin token; tenants with
// their API key. The groups share one path space (unless the admin routes have a listener of
// their own), so each route says which it belongs to.
func (s *Service) routes(e *echo.Echo) {
	v1 := e.Group("/api/v1", bodyLimit(s.cfg.MaxBodyBytes))
	admin := v1.Group("", s.requireAdmin)
	if s.deps.AdminEcho != nil {
		admin = s.deps.AdminEcho.Group("/api/v1", bodyLimit(s.cfg.MaxBodyBytes), s.requireAdmin)
	}
	tenant := v1.Group("", s.requireTenant)

	admin.GET("/whoami", func(c echo.Context) error {
		return c.JSON(http.StatusOK, map[string]any{"success": true, "role": "admin"})
	})
	tenant.GET("/me", s.me)

	s.tenantRoutes(admin) // tenants.go: spawn, status, logs, destroy, list; tenant_keys.go; orgs.go
	admin.GET("/audit", s.listAudit)
	s.budgetRoutes(admin)  // budgets.go
	s.invoiceRoutes(admin) // invoices.go
	// The OpenAI-compatible surface, for OpenAI SDKs pointed at <api>/v1.
	openAI := e.Group("/v1", bodyLimit(s.cfg.MaxBodyBytes), s.requireTenant)
	s.convergeRoutes(tenant, openAI) // converge.go, openai.go: converge and its shortcuts, tasks, progress
	s.usageRoutes(admin, tenant)     // usage.go: usage for operators and for a tenant itself
}

// bodyLimit answers 413 for a body over limit bytes, whether or not it declares its length.
func bodyLimit(limit int64) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			r := c.Request()
			if r.ContentLength > limit {
				return httpx.Errorf(http.StatusRequestEntityTooLarge, "too_large", "request body is %d bytes; the limit is %d", r.ContentLength, limit)
			}
			r.Body = http.MaxBytesReader(c.Response(), r.Body, limit)
			return next(c)
		}
	}
}
