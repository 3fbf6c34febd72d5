package runtime

import (
	"errors"
	"flag"
	"fmt"
	"net/netip"
)

// Publish modes of [SwarmConfig].PublishMode.
const (
	// PublishIngress publishes a tenant's port through the routing mesh: on every node of the
	// swarm, forwarded to the node that runs the tenant's task, and only while its health
	// check passes.
	PublishIngress = "ingress"
	// PublishHost publishes a tenant's port only on the node that runs its task.
	PublishHost = "host"
)

// SwarmConfig is what only the Swarm runtime reads; everything the two runtimes share (names,
// labels, user, tmpfs, restart retries, log caps) comes from its [DockerConfig]. Zero fields
// take their defaults.
type SwarmConfig struct {
	// PublishMode is PublishIngress (the default) or PublishHost.
	PublishMode string
}

// RegisterFlags registers the settings as flags prefixed "provisioner.runtime.swarm-".
func (c *SwarmConfig) RegisterFlags(fs *flag.FlagSet) {
	const p = "provisioner.runtime.swarm-"
	fs.StringVar(&c.PublishMode, p+"publish-mode", PublishIngress, "how swarm publishes tenant ports: ingress (the routing mesh, on every node) or host (on the node running the tenant)")
}

func (c SwarmConfig) withDefaults() SwarmConfig {
	if c.PublishMode == "" {
		c.PublishMode = PublishIngress
	}
	return c
}

// Validate says what is wrong with the config after defaults, and with the shared settings
// common as the Swarm runtime reads them.
func (c SwarmConfig) Validate(common DockerConfig) error {
	c = c.withDefaults()
	common = common.withDefaults()
	var errs []error
	if c.PublishMode != PublishIngress && c.PublishMode != PublishHost {
		errs = append(errs, fmt.Errorf("swarm publish mode %q must be %s or %s", c.PublishMode, PublishIngress, PublishHost))
	}
	// Swarm publishes on every interface and has no setting for one address: a runtime that
	// was told 127.0.0.1 must not publish tenants to the network behind the operator's back.
	if a, err := netip.ParseAddr(common.HostIP); err == nil && !a.IsUnspecified() {
		errs = append(errs, fmt.Errorf("host ip %s: swarm publishes tenant ports on every interface (of every node, through the routing mesh); set the host ip to 0.0.0.0 to accept that, and firewall the tenant port range", common.HostIP))
	}
	return errors.Join(errs...)
}
