package provisioner_test

import (
	"flag"
	"io"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/convergence-dev/convergence/services/provisioner"
	"github.com/convergence-dev/convergence/services/provisioner/runtime"
)

func TestConfig_Flags_DefaultsAreValid(t *testing.T) {
	t.Parallel()
	var c provisioner.Config
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	c.RegisterFlags(fs)
	require.NoError(t, fs.Parse([]string{"-provisioner.ports=4000-4099", "-provisioner.health-interval=10s"}))
	require.NoError(t, c.Validate())
	require.Equal(t, "4000-4099", c.Ports)
	require.Equal(t, 10*time.Second, c.HealthInterval)
	require.Equal(t, provisioner.DefaultTenantAPIURL, c.TenantAPIURL)
}

func TestConfig_RuntimeFlag_DockerByDefault_SwarmWhenAsked(t *testing.T) {
	t.Parallel()
	parse := func(args ...string) provisioner.Config {
		var c provisioner.Config
		fs := flag.NewFlagSet("test", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		c.RegisterFlags(fs)
		require.NoError(t, fs.Parse(args))
		return c
	}
	require.Equal(t, provisioner.RuntimeDocker, parse().RuntimeKind)
	c := parse("-provisioner.runtime=swarm", "-provisioner.runtime.host-ip=0.0.0.0", "-provisioner.runtime.swarm-publish-mode=host")
	require.NoError(t, c.Validate())
	require.Equal(t, provisioner.RuntimeSwarm, c.RuntimeKind)
	require.Equal(t, runtime.PublishHost, c.Swarm.PublishMode)
	require.ErrorContains(t, parse("-provisioner.runtime=nomad").Validate(), `provisioner.runtime "nomad" is not a runtime`)
}

func TestConfig_Validate_SaysWhatIsWrong(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		edit func(*provisioner.Config)
		want string
	}{
		{"ports not a range", func(c *provisioner.Config) { c.Ports = "3001" }, `provisioner.ports "3001" must be a range first-last`},
		{"ports reversed", func(c *provisioner.Config) { c.Ports = "4000-3000" }, "such as 3001-3999"},
		{"ports too many", func(c *provisioner.Config) { c.Ports = "1000-60000" }, "at most 20000 ports"},
		{"api url", func(c *provisioner.Config) { c.TenantAPIURL = "ftp://x" }, "must be an http(s) URL"},
		{"concurrency", func(c *provisioner.Config) { c.Concurrency = 1000 }, "between 1 and 256"},
		{"egress policy", func(c *provisioner.Config) { c.EgressPolicy = "lax" }, `provisioner.egress-policy "lax" must be enforce or off`},
		{"egress without the host's API", func(c *provisioner.Config) { c.TenantAPIURL = "https://api.example.com" },
			"the egress policy lets tenants reach the API only on the Docker host, as http://host.docker.internal:PORT"},
		{"health within spawn", func(c *provisioner.Config) { c.HealthTimeout = 5 * time.Minute }, "health-timeout 5m0s must be shorter than provisioner.spawn-timeout"},
		{"spawn within stuck", func(c *provisioner.Config) { c.SpawnTimeout = time.Hour }, "must be shorter than provisioner.stuck-after"},
		{"negative", func(c *provisioner.Config) { c.OrphanGrace = -time.Second }, "orphan-grace -1s must be positive"},
		{"runtime", func(c *provisioner.Config) { c.Runtime.User = "0:0" }, "must not be root"},
		{"runtime kind", func(c *provisioner.Config) { c.RuntimeKind = "kubernetes" },
			`provisioner.runtime "kubernetes" is not a runtime: use docker (a container per tenant on one engine) or swarm`},
		{"swarm on loopback", func(c *provisioner.Config) { c.RuntimeKind = provisioner.RuntimeSwarm },
			"swarm publishes tenant ports on every interface"},
		{"swarm publish mode", func(c *provisioner.Config) {
			c.RuntimeKind, c.Runtime.HostIP, c.Swarm.PublishMode = provisioner.RuntimeSwarm, "0.0.0.0", "mesh"
		}, `swarm publish mode "mesh" must be ingress or host`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := provisioner.Config{StateDir: t.TempDir()}
			tt.edit(&c)
			require.ErrorContains(t, c.Validate(), tt.want)
		})
	}
}

func TestNew_MissingStateDirOrDocker_SaysWhat(t *testing.T) {
	t.Parallel()
	_, err := provisioner.New(provisioner.Config{}, provisioner.Deps{})
	require.ErrorContains(t, err, "provisioner.state-dir is empty")
	_, err = provisioner.New(provisioner.Config{StateDir: t.TempDir()}, provisioner.Deps{})
	require.ErrorContains(t, err, "no Docker client")
}
