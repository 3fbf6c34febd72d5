package provisioner

import (
	"errors"
	"flag"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/convergence-dev/convergence/services/provisioner/runtime"
)

// Defaults of [Config].
const (
	DefaultPorts             = "3001-3999"
	DefaultTenantAPIURL      = "http://host.docker.internal:3000"
	DefaultConcurrency       = 8
	DefaultHealthTimeout     = 30 * time.Second
	DefaultSpawnTimeout      = 2 * time.Minute
	DefaultDestroyGrace      = 10 * time.Second
	DefaultHealthInterval    = 30 * time.Second
	DefaultReconcileInterval = time.Minute
	DefaultOrphanGrace       = 5 * time.Minute
	DefaultStuckAfter        = 5 * time.Minute
	DefaultPortQuarantine    = time.Minute
)

// hostGateway is the extra hosts entry that lets a tenant reach the Docker host by the name
// host.docker.internal (Docker 20.10 and later).
const hostGateway = "host.docker.internal:host-gateway"

// Config is what the provisioner reads at start. Zero durations and counts take the defaults
// above; Validate says what is wrong with the rest.
type Config struct {
	// RuntimeKind is what tenants run on: RuntimeDocker (the default: a container each on the
	// one engine Deps.Docker reaches) or RuntimeSwarm (a Swarm service each, on the swarm that
	// engine manages). Flag provisioner.runtime.
	RuntimeKind string
	// Runtime configures either runtime: names, labels, user, limits, logs (flags prefixed
	// "provisioner.runtime.").
	Runtime runtime.DockerConfig
	// Swarm holds the settings only the Swarm runtime reads (flags prefixed
	// "provisioner.runtime.swarm-").
	Swarm runtime.SwarmConfig
	// StateDir holds the provisioner's files: a docker-compose file per tenant
	// (tenants/<container>.compose.yml, mode 0600, since each holds its tenant's API key) and,
	// unless KeyFile says otherwise, the sealing key (provisioner.key). New requires it; the
	// platform fills it in from its data dir when the flag is unset, so Validate does not.
	StateDir string
	// KeyFile is the provisioner's private sealing key, created on first start; empty means
	// StateDir/provisioner.key. Every replica must share it.
	KeyFile string
	// Ports is the host port range tenants are published on, "first-last".
	Ports string
	// TenantAPIURL is the platform API as tenants reach it from their containers, injected as
	// CONVERGENCE_API_URL. When its host is host.docker.internal, the runtime maps that name to
	// the Docker host.
	TenantAPIURL string
	// EgressPolicy is EgressEnforce (the default: the host's firewall holds every tenant to
	// its egress class, see package egress) or EgressOff (tenants reach what Docker's own
	// rules let them: the host's ports and the internet).
	EgressPolicy string
	// Concurrency is how many spawn and destroy commands run at once.
	Concurrency int
	// HealthTimeout bounds the wait for a new container's GET /health.
	HealthTimeout time.Duration
	// SpawnTimeout bounds one spawn: port, container, health, and the database update.
	SpawnTimeout time.Duration
	// DestroyGrace is how long a destroyed tenant gets to exit after SIGTERM.
	DestroyGrace time.Duration
	// HealthInterval is how often the health watcher checks every tenant; Docker events
	// trigger checks in between.
	HealthInterval time.Duration
	// ReconcileInterval is how often the reconciler compares the database with the engine.
	ReconcileInterval time.Duration
	// OrphanGrace is how old a labelled container or network unknown to the database must be
	// before the reconciler removes it.
	OrphanGrace time.Duration
	// StuckAfter is how long a tenant may stay provisioning, or wait for its destroy, before
	// the reconciler ends it: provisioning moves to error with the reason, a destroy is done
	// by the reconciler itself.
	StuckAfter time.Duration
	// PortQuarantine is how long a port found bound by something else is skipped.
	PortQuarantine time.Duration
}

// RegisterFlags registers the provisioner's flags on fs, prefixed "provisioner.".
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	const p = "provisioner."
	fs.StringVar(&c.RuntimeKind, p+"runtime", RuntimeDocker, "what tenants run on: docker (a container each on one engine) or swarm (a Swarm service each)")
	c.Runtime.RegisterFlags(fs)
	c.Swarm.RegisterFlags(fs)
	fs.StringVar(&c.StateDir, p+"state-dir", "", "directory for tenant compose files and the sealing key (default <data-dir>/provisioner)")
	fs.StringVar(&c.KeyFile, p+"key-file", "", "the provisioner's private sealing key, shared by all replicas (default <state-dir>/provisioner.key)")
	fs.StringVar(&c.Ports, p+"ports", DefaultPorts, "host port range for tenants, first-last")
	fs.StringVar(&c.TenantAPIURL, p+"tenant-api-url", DefaultTenantAPIURL, "the API's URL as tenant containers reach it (CONVERGENCE_API_URL)")
	fs.StringVar(&c.EgressPolicy, p+"egress-policy", EgressEnforce, "enforce: the host's firewall holds each tenant to its egress class (needs root or CAP_NET_ADMIN); off: tenants reach the host and the internet")
	fs.IntVar(&c.Concurrency, p+"concurrency", DefaultConcurrency, "spawn and destroy commands handled at once")
	fs.DurationVar(&c.HealthTimeout, p+"health-timeout", DefaultHealthTimeout, "how long a new tenant may take to answer GET /health")
	fs.DurationVar(&c.SpawnTimeout, p+"spawn-timeout", DefaultSpawnTimeout, "bound on one spawn, health wait included")
	fs.DurationVar(&c.DestroyGrace, p+"destroy-grace", DefaultDestroyGrace, "time a destroyed tenant gets to exit after SIGTERM")
	fs.DurationVar(&c.HealthInterval, p+"health-interval", DefaultHealthInterval, "how often every tenant's health is checked (Docker events trigger checks in between)")
	fs.DurationVar(&c.ReconcileInterval, p+"reconcile-interval", DefaultReconcileInterval, "how often the database is reconciled with the Docker engine")
	fs.DurationVar(&c.OrphanGrace, p+"orphan-grace", DefaultOrphanGrace, "age at which a labelled container unknown to the database is removed")
	fs.DurationVar(&c.StuckAfter, p+"stuck-after", DefaultStuckAfter, "how long provisioning or a pending destroy may take before the reconciler ends it")
	fs.DurationVar(&c.PortQuarantine, p+"port-quarantine", DefaultPortQuarantine, "how long a port found in use by something else is skipped")
}

// withDefaults fills in zero fields.
func (c Config) withDefaults() Config {
	if c.KeyFile == "" && c.StateDir != "" {
		c.KeyFile = c.StateDir + "/provisioner.key"
	}
	if c.RuntimeKind == "" {
		c.RuntimeKind = RuntimeDocker
	}
	if c.Ports == "" {
		c.Ports = DefaultPorts
	}
	if c.TenantAPIURL == "" {
		c.TenantAPIURL = DefaultTenantAPIURL
	}
	if c.EgressPolicy == "" {
		c.EgressPolicy = EgressEnforce
	}
	if c.Concurrency == 0 {
		c.Concurrency = DefaultConcurrency
	}
	for _, d := range []struct {
		v   *time.Duration
		def time.Duration
	}{
		{&c.HealthTimeout, DefaultHealthTimeout},
		{&c.SpawnTimeout, DefaultSpawnTimeout},
		{&c.DestroyGrace, DefaultDestroyGrace},
		{&c.HealthInterval, DefaultHealthInterval},
		{&c.ReconcileInterval, DefaultReconcileInterval},
		{&c.OrphanGrace, DefaultOrphanGrace},
		{&c.StuckAfter, DefaultStuckAfter},
		{&c.PortQuarantine, DefaultPortQuarantine},
	} {
		if *d.v == 0 {
			*d.v = d.def
		}
	}
	if u, err := url.Parse(c.TenantAPIURL); err == nil && u.Hostname() == "host.docker.internal" &&
		!slices.Contains(c.Runtime.ExtraHosts, hostGateway) {
		c.Runtime.ExtraHosts = append(slices.Clone(c.Runtime.ExtraHosts), hostGateway)
	}
	return c
}

// Validate says what is wrong with the config, all of it at once.
func (c Config) Validate() error {
	c = c.withDefaults()
	var errs []error
	if _, _, err := parsePorts(c.Ports); err != nil {
		errs = append(errs, err)
	}
	if u, err := url.Parse(c.TenantAPIURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		errs = append(errs, fmt.Errorf("provisioner.tenant-api-url %q must be an http(s) URL such as %s", c.TenantAPIURL, DefaultTenantAPIURL))
	}
	switch c.EgressPolicy {
	case EgressOff:
	case EgressEnforce:
		if _, err := c.tenantAPIPort(); err != nil {
			errs = append(errs, err)
		}
	default:
		errs = append(errs, fmt.Errorf("provisioner.egress-policy %q must be %s or %s", c.EgressPolicy, EgressEnforce, EgressOff))
	}
	if c.Concurrency < 1 || c.Concurrency > 256 {
		errs = append(errs, fmt.Errorf("provisioner.concurrency %d must be between 1 and 256", c.Concurrency))
	}
	for name, d := range map[string]time.Duration{
		"health-timeout": c.HealthTimeout, "spawn-timeout": c.SpawnTimeout, "destroy-grace": c.DestroyGrace,
		"health-interval": c.HealthInterval, "reconcile-interval": c.ReconcileInterval,
		"orphan-grace": c.OrphanGrace, "stuck-after": c.StuckAfter, "port-quarantine": c.PortQuarantine,
	} {
		if d < 0 {
			errs = append(errs, fmt.Errorf("provisioner.%s %s must be positive", name, d))
		}
	}
	if c.HealthTimeout >= c.SpawnTimeout {
		errs = append(errs, fmt.Errorf("provisioner.health-timeout %s must be shorter than provisioner.spawn-timeout %s", c.HealthTimeout, c.SpawnTimeout))
	}
	if c.SpawnTimeout >= c.StuckAfter {
		errs = append(errs, fmt.Errorf("provisioner.spawn-timeout %s must be shorter than provisioner.stuck-after %s", c.SpawnTimeout, c.StuckAfter))
	}
	if err := c.Runtime.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("provisioner.runtime: %w", err))
	}
	switch c.RuntimeKind {
	case RuntimeDocker:
	case RuntimeSwarm:
		if err := c.Swarm.Validate(c.Runtime); err != nil {
			errs = append(errs, fmt.Errorf("provisioner.runtime=swarm: %w", err))
		}
	default:
		errs = append(errs, fmt.Errorf("provisioner.runtime %q is not a runtime: use %s (a container per tenant on one engine) or %s (a Swarm service per tenant)", c.RuntimeKind, RuntimeDocker, RuntimeSwarm))
	}
	slices.SortFunc(errs, func(a, b error) int { return strings.Compare(a.Error(), b.Error()) })
	return errors.Join(errs...)
}

// parsePorts reads a "first-last" port range.
func parsePorts(s string) (first, last int, err error) {
	a, b, ok := strings.Cut(s, "-")
	first, err1 := strconv.Atoi(strings.TrimSpace(a))
	last, err2 := strconv.Atoi(strings.TrimSpace(b))
	if !ok || err1 != nil || err2 != nil || first < 1 || last > 65535 || first > last || last-first >= 20000 {
		return 0, 0, fmt.Errorf("provisioner.ports %q must be a range first-last within 1-65535 of at most 20000 ports, such as %s", s, DefaultPorts)
	}
	return first, last, nil
}

// Runtimes (Config.RuntimeKind).
const (
	RuntimeDocker = "docker"
	RuntimeSwarm  = "swarm"
)

// Egress policies (Config.EgressPolicy).
const (
	EgressEnforce = "enforce"
	EgressOff     = "off"
)

// tenantAPIPort is the host port tenants reach the API on, which the egress policy lets them
// reach. The policy knows the API only on the Docker host: at host.docker.internal.
func (c Config) tenantAPIPort() (uint16, error) {
	u, err := url.Parse(c.TenantAPIURL)
	if err != nil || u.Hostname() != "host.docker.internal" {
		return 0, fmt.Errorf("provisioner.tenant-api-url %q: the egress policy lets tenants reach the API only on the Docker host, as http://host.docker.internal:PORT; point it there, or set provisioner.egress-policy=%s", c.TenantAPIURL, EgressOff)
	}
	port := u.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("provisioner.tenant-api-url %q has no valid port", c.TenantAPIURL)
	}
	return uint16(n), nil
}
