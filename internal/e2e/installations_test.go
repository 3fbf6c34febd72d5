package e2e_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/convergence-dev/convergence/internal/dockertest"
	"github.com/convergence-dev/convergence/internal/platform"
)

// TestInstallations_TwoOnOneEngine_NeitherRemovesTheOthersTenants runs two installations on one
// Docker engine with the same name prefix and labels, each on a database of its own (the
// second an empty one, as a new install or a lost database would be), with reconcilers that
// remove unknown objects after a second. Each spawns its tenant 1; after several reconcile
// passes both still run.
func TestInstallations_TwoOnOneEngine_NeitherRemovesTheOthersTenants(t *testing.T) {
	t.Parallel()
	eager := func(c *platform.Config) {
		c.Provisioner.ReconcileInterval = 200 * time.Millisecond
		c.Provisioner.OrphanGrace = time.Second
	}
	first := startStack(t, eager)
	second := startStack(t, eager, func(c *platform.Config) {
		c.Provisioner.Runtime.NamePrefix = first.Config.Provisioner.Runtime.NamePrefix
		c.Provisioner.Runtime.Labels = first.Config.Provisioner.Runtime.Labels
	})
	a, b := first.spawn(t, "first", false), second.spawn(t, "second", false)
	require.Equal(t, a.EnvID, b.EnvID, "each installation's tenant 1")
	require.NotEqual(t, a.ContainerName, b.ContainerName, "names apart by instance id")

	time.Sleep(3 * time.Second) // well past the grace, over a dozen reconcile passes each
	cli := dockertest.Client(t)
	for _, tn := range []tenant{a, b} {
		c, err := cli.ContainerInspect(t.Context(), tn.ContainerName)
		require.NoError(t, err, "%s is still there", tn.ContainerName)
		require.True(t, c.State.Running, "%s still runs", tn.ContainerName)
	}
	for _, s := range []*stack{first, second} {
		var st struct {
			Tenant tenant `json:"tenant"`
		}
		require.Equal(t, http.StatusOK, s.admin(t, http.MethodGet, "/api/v1/tenant/1/status", nil, &st))
		require.Equal(t, "running", st.Tenant.Status)
	}
}
