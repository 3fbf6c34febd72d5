package runtime

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/client"

	"github.com/convergence-dev/convergence/services/provisioner/egress"
)

// cleanupTimeout bounds the removal of half-created objects after a failed Ensure, which runs
// even when the caller's ctx is already done.
const cleanupTimeout = 30 * time.Second

// Docker runs tenant containers on one Docker engine, driven through the Docker SDK (never the
// CLI). Every method takes a ctx that bounds it, and every method is safe for concurrent use on
// different tenants. For one tenant, the caller serializes Ensure and Remove (the provisioner
// handles one command per tenant at a time); concurrent Ensures of the same spec converge on
// one container.
type Docker struct {
	cli     client.APIClient
	cfg     DockerConfig
	subnets subnetPool
	// ownSubnets is false when networks take subnets from the engine's default pools.
	ownSubnets bool
	log        *slog.Logger
	health     *http.Client
	// duplicatesRemoved counts the empty duplicate networks inspectNetwork removed.
	duplicatesRemoved atomic.Uint64
}

// DuplicateNetworksRemoved is how many empty duplicates of tenant networks the runtime has
// removed since it was made (see inspectNetwork).
func (d *Docker) DuplicateNetworksRemoved() uint64 { return d.duplicatesRemoved.Load() }

// NewDocker returns a runtime on the engine cli talks to. It starts nothing and makes no call
// to the engine. The caller owns cli (create it with client.FromEnv and
// client.WithAPIVersionNegotiation) and closes it after the last call on the runtime; the
// runtime holds nothing else that needs closing.
func NewDocker(cli client.APIClient, cfg DockerConfig, log *slog.Logger) (*Docker, error) {
	if cli == nil {
		return nil, fmt.Errorf("new docker runtime: nil docker client")
	}
	if log == nil {
		return nil, fmt.Errorf("new docker runtime: nil logger")
	}
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("new docker runtime: %w", err)
	}
	if cfg.Instance != "" {
		cfg.Labels = maps.Clone(cfg.Labels)
		if cfg.Labels == nil {
			cfg.Labels = map[string]string{}
		}
		cfg.Labels[LabelInstance] = cfg.Instance
	}
	subnets, ownSubnets, err := parseSubnetPool(cfg.SubnetPool, cfg.SubnetBits)
	if err != nil {
		return nil, fmt.Errorf("new docker runtime: %w", err)
	}
	return &Docker{
		cli:        cli,
		cfg:        cfg,
		subnets:    subnets,
		ownSubnets: ownSubnets,
		log:        log.With("component", "runtime", "runtime", "docker"),
		health: &http.Client{
			// Keep-alive would leave an idle connection (and its goroutines) per tenant.
			Transport: &http.Transport{DisableKeepAlives: true},
			// A redirect from /health is not health.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}, nil
}

// ContainerName returns the deterministic name of the tenant's container.
func (d *Docker) ContainerName(envID int64) string {
	return d.namePrefix() + "-env-" + strconv.FormatInt(envID, 10)
}

// namePrefix starts the name of every object of the installation.
func (d *Docker) namePrefix() string { return d.cfg.namePrefix() }

func (c DockerConfig) namePrefix() string {
	if c.Instance != "" {
		return c.NamePrefix + "-" + c.Instance
	}
	return c.NamePrefix
}

// Egress returns the names of the installation's egress policy: its firewall table, and the
// prefix of its tenant bridges. The caller fills in what tenants may reach.
func (d *Docker) Egress() egress.Policy { return d.cfg.Egress() }

// Egress is [Docker.Egress] for the runtime this configuration makes.
func (c DockerConfig) Egress() egress.Policy { return egress.New(c.withDefaults().namePrefix()) }

// networkOptions are the driver options of the tenant's network: the bridge's name, which
// the egress policy matches, and the MTU when one is set.
func (d *Docker) networkOptions(spec Spec) (map[string]string, error) {
	bridge, err := d.Egress().BridgeName(spec.Egress, spec.EnvID)
	if err != nil {
		return nil, err
	}
	opts := map[string]string{"com.docker.network.bridge.name": bridge}
	if d.cfg.NetworkMTU > 0 {
		opts["com.docker.network.driver.mtu"] = strconv.Itoa(d.cfg.NetworkMTU)
	}
	return opts, nil
}

// NetworkName returns the deterministic name of the tenant's network.
func (d *Docker) NetworkName(envID int64) string {
	return d.ContainerName(envID) + "-net"
}

// VolumeName returns the name of the tenant's secrets volume ([Spec.Secrets]).
func (d *Docker) VolumeName(envID int64) string {
	return d.ContainerName(envID) + "-secrets"
}

// healthURL returns the URL WaitHealthy probes for a tenant published on hostPort.
func (d *Docker) healthURL(hostPort int) string {
	host := d.cfg.HostIP
	if addr := net.ParseIP(host); addr == nil || addr.IsUnspecified() {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, strconv.Itoa(hostPort)) + "/health"
}

// labelFilters returns the label filters that select this runtime's objects.
func (d *Docker) labelFilters() filters.Args {
	f := filters.NewArgs(filters.Arg("label", LabelManaged+"=true"))
	for k, v := range d.cfg.Labels {
		f.Add("label", k+"="+v)
	}
	return f
}

// inspect returns the tenant's container. It wraps [ErrNotFound] when there is none and
// [ErrNotManaged] when the name belongs to an object without this runtime's labels.
func (d *Docker) inspect(ctx context.Context, envID int64) (container.InspectResponse, error) {
	name := d.ContainerName(envID)
	c, err := d.cli.ContainerInspect(ctx, name)
	if err != nil {
		if isNotFound(err) {
			return container.InspectResponse{}, fmt.Errorf("container %s: %w", name, ErrNotFound)
		}
		return container.InspectResponse{}, fmt.Errorf("inspect container %s: %w", name, err)
	}
	if c.Config == nil || c.State == nil || c.HostConfig == nil || !managedBy(c.Config.Labels, d.cfg.Labels) {
		return container.InspectResponse{}, fmt.Errorf("container %s: %w", name, ErrNotManaged)
	}
	return c, nil
}

// publishedPort returns the host port the container publishes, or zero.
func publishedPort(c container.InspectResponse) int {
	if c.HostConfig == nil {
		return 0
	}
	for _, bindings := range c.HostConfig.PortBindings {
		for _, b := range bindings {
			if p, err := strconv.Atoi(b.HostPort); err == nil {
				return p
			}
		}
	}
	return 0
}

// parseTime reads an engine timestamp; the engine's zero time and malformed values read as
// the zero time.
func parseTime(s string) time.Time {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil || t.Year() <= 1 {
		return time.Time{}
	}
	return t
}
