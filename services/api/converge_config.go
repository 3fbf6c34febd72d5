package api

import (
	"errors"
	"flag"
	"fmt"
	"time"
)

// ConvergeConfig configures the convergence endpoints. The zero value of a field means its
// default from DefaultConvergeConfig.
type ConvergeConfig struct {
	// SyncWait is how long a converge request waits for its result before it answers 202
	// with the task ID. A caller sets its own wait, up to MaxSyncWait, with
	// "Prefer: wait=<seconds>", and skips it with "async": true or "Prefer: respond-async".
	// Default 1m.
	SyncWait time.Duration
	// RateLimit bounds each tenant's requests.
	RateLimit RateLimits
	// MaxBacklog is how many convergence tasks the platform holds at once, queued or
	// running; beyond it a new task is refused with 429. Default 20000.
	MaxBacklog int
	// MaxTenantTasks is how many unfinished tasks one tenant may have at once, unless its
	// organization's plan sets tasksInFlight; beyond it the tenant's new tasks are refused with
	// 429, so that one tenant cannot fill the queue that every tenant shares. Default 100.
	MaxTenantTasks int
	// MaxTenantWaits and MaxTenantStreams bound the sync waits and the progress streams one
	// tenant holds open on one API replica at once; beyond them it gets 429. Defaults 50, 20.
	MaxTenantWaits   int
	MaxTenantStreams int
	// BudgetTurnTokens is the token cap of one turn (its input and output) that a run's worst
	// case is reckoned with when the run is reserved against a budget and sets no tokenBudget
	// of its own: (maxRounds × 2 + 1) turns of it, which becomes the run's token budget.
	// Default 8000.
	BudgetTurnTokens int64
}

// MaxSyncWait is the longest wait a caller may ask for with "Prefer: wait".
const MaxSyncWait = 5 * time.Minute

// RateLimits are the default token buckets of every tenant; a plan's requestsPerMinute and
// burst replace the create bucket's, and api_rate_limits overrides either per tenant. Creating
// tasks costs tokens of the LLM providers, so it has its own, smaller bucket; reads (task
// status, progress streams, cancels, webhook secrets) share the other.
type RateLimits struct {
	CreatePerMinute float64
	CreateBurst     int
	ReadPerMinute   float64
	ReadBurst       int
}

// DefaultConvergeConfig returns the defaults the flags also have.
func DefaultConvergeConfig() ConvergeConfig {
	return ConvergeConfig{
		SyncWait:         time.Minute,
		MaxBacklog:       20000,
		MaxTenantTasks:   100,
		MaxTenantWaits:   50,
		MaxTenantStreams: 20,
		BudgetTurnTokens: 8000,
		RateLimit: RateLimits{
			CreatePerMinute: 60,
			CreateBurst:     30,
			ReadPerMinute:   1200,
			ReadBurst:       200,
		},
	}
}

// RegisterFlags registers the convergence endpoints' flags on fs, prefixed "api.".
func (c *ConvergeConfig) RegisterFlags(fs *flag.FlagSet) {
	d := DefaultConvergeConfig()
	fs.DurationVar(&c.SyncWait, "api.converge.sync-wait", d.SyncWait, "how long a converge request waits for its result before answering 202 with the task ID")
	fs.IntVar(&c.MaxBacklog, "api.converge.max-backlog", d.MaxBacklog, "convergence tasks the platform holds at once, queued or running, before it answers 429")
	fs.IntVar(&c.MaxTenantTasks, "api.converge.max-tenant-tasks", d.MaxTenantTasks, "unfinished convergence tasks one tenant may have at once before it is answered 429, where its plan sets no tasksInFlight")
	fs.IntVar(&c.MaxTenantWaits, "api.converge.max-tenant-waits", d.MaxTenantWaits, "sync waits one tenant may hold open on one API replica before it is answered 429")
	fs.IntVar(&c.MaxTenantStreams, "api.converge.max-tenant-streams", d.MaxTenantStreams, "progress streams one tenant may hold open on one API replica before it is answered 429")
	fs.Int64Var(&c.BudgetTurnTokens, "api.budget.turn-tokens", d.BudgetTurnTokens, "tokens of one turn, input and output, that a run's worst case is reserved against a budget with when it sets no tokenBudget")
	fs.Float64Var(&c.RateLimit.CreatePerMinute, "api.ratelimit.create-per-minute", d.RateLimit.CreatePerMinute, "convergence tasks a tenant may create per minute, sustained, where its plan sets no requestsPerMinute")
	fs.IntVar(&c.RateLimit.CreateBurst, "api.ratelimit.create-burst", d.RateLimit.CreateBurst, "convergence tasks a tenant may create at once, where its plan sets no burst")
	fs.Float64Var(&c.RateLimit.ReadPerMinute, "api.ratelimit.read-per-minute", d.RateLimit.ReadPerMinute, "task reads, progress streams and cancels a tenant may make per minute, sustained")
	fs.IntVar(&c.RateLimit.ReadBurst, "api.ratelimit.read-burst", d.RateLimit.ReadBurst, "task reads, progress streams and cancels a tenant may make at once")
}

// Validate says what is wrong with the config.
func (c ConvergeConfig) Validate() error {
	switch {
	case c.SyncWait < 0 || c.SyncWait > MaxSyncWait:
		return fmt.Errorf("api.converge.sync-wait %s: use up to %s", c.SyncWait, MaxSyncWait)
	case c.MaxBacklog < 0:
		return fmt.Errorf("api.converge.max-backlog %d: use 1 or more", c.MaxBacklog)
	case c.MaxTenantTasks < 0:
		return fmt.Errorf("api.converge.max-tenant-tasks %d: use 1 or more", c.MaxTenantTasks)
	case c.BudgetTurnTokens < 0:
		return fmt.Errorf("api.budget.turn-tokens %d: use 1 or more", c.BudgetTurnTokens)
	case c.MaxTenantWaits < 0 || c.MaxTenantStreams < 0:
		return errors.New("api.converge.max-tenant-waits and max-tenant-streams: use 1 or more")
	case c.RateLimit.CreatePerMinute < 0 || c.RateLimit.ReadPerMinute < 0:
		return errors.New("api.ratelimit.*-per-minute must be positive")
	case c.RateLimit.CreateBurst < 0 || c.RateLimit.ReadBurst < 0:
		return errors.New("api.ratelimit.*-burst must be at least 1")
	}
	return nil
}

// withDefaults fills the zero fields with their defaults.
func (c ConvergeConfig) withDefaults() ConvergeConfig {
	d := DefaultConvergeConfig()
	if c.SyncWait == 0 {
		c.SyncWait = d.SyncWait
	}
	if c.MaxBacklog == 0 {
		c.MaxBacklog = d.MaxBacklog
	}
	if c.MaxTenantTasks == 0 {
		c.MaxTenantTasks = d.MaxTenantTasks
	}
	if c.MaxTenantWaits == 0 {
		c.MaxTenantWaits = d.MaxTenantWaits
	}
	if c.MaxTenantStreams == 0 {
		c.MaxTenantStreams = d.MaxTenantStreams
	}
	if c.BudgetTurnTokens == 0 {
		c.BudgetTurnTokens = d.BudgetTurnTokens
	}
	if c.RateLimit.CreatePerMinute == 0 {
		c.RateLimit.CreatePerMinute = d.RateLimit.CreatePerMinute
	}
	if c.RateLimit.CreateBurst == 0 {
		c.RateLimit.CreateBurst = d.RateLimit.CreateBurst
	}
	if c.RateLimit.ReadPerMinute == 0 {
		c.RateLimit.ReadPerMinute = d.RateLimit.ReadPerMinute
	}
	if c.RateLimit.ReadBurst == 0 {
		c.RateLimit.ReadBurst = d.RateLimit.ReadBurst
	}
	return c
}

// convergeConfig is the configuration of the convergence endpoints, defaults filled in.
func (s *Service) convergeConfig() ConvergeConfig { return s.cfg.Converge.withDefaults() }
