package e2e_test

import (
	"net"
	"net/http"
	"net/url"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/convergence-dev/convergence/internal/dockertest"
	"github.com/convergence-dev/convergence/internal/platform"
)

// TestReach_FromInsideATenant_OnlyTheTenantAPIAnswers looks at the platform from inside a
// running tenant's network namespace, as the tenant's code would: through the host gateway of
// its network (the only way out to the platform), only the tenant routes of the API answer.
// The admin routes (on a listener of their own), the ops listener (/metrics), NATS,
// PostgreSQL, and another tenant, on its published port or its own address, do not. Only the
// platform's own addresses are probed.
func TestReach_FromInsideATenant_OnlyTheTenantAPIAnswers(t *testing.T) {
	t.Parallel()
	s := startStack(t, func(c *platform.Config) {
		c.AdminAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t)))
		c.NATSListen = net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t)))
	})
	a, b := s.spawn(t, "reach-a", false), s.spawn(t, "reach-b", false)
	cli := dockertest.Client(t)
	inspectA, err := cli.ContainerInspect(t.Context(), a.ContainerName)
	require.NoError(t, err)
	inspectB, err := cli.ContainerInspect(t.Context(), b.ContainerName)
	require.NoError(t, err)
	var gateway, otherTenant string
	for _, ep := range inspectA.NetworkSettings.Networks {
		gateway = ep.Gateway
	}
	for _, ep := range inspectB.NetworkSettings.Networks {
		otherTenant = ep.IPAddress
	}
	require.NotEmpty(t, gateway, "tenant A's network has a gateway")
	require.NotEmpty(t, otherTenant)

	port := func(addr string) string {
		_, p, err := net.SplitHostPort(addr)
		require.NoError(t, err)
		return p
	}
	db, err := url.Parse(s.Config.DatabaseURL)
	require.NoError(t, err)
	api := "http://" + net.JoinHostPort(gateway, port(s.Config.HTTPAddr))
	targets := map[string]string{
		"the tenant API":                 api + "/api/v1/me",
		"an admin route on the API port": api + "/api/v1/whoami",
		"/metrics on the API port":       api + "/metrics",
		"the admin listener":             "tcp://" + net.JoinHostPort(gateway, port(s.Config.AdminAddr)),
		"the ops listener":               "tcp://" + net.JoinHostPort(gateway, port(s.Config.OpsAddr)),
		"NATS":                           "tcp://" + net.JoinHostPort(gateway, port(s.Config.NATSListen)),
		"PostgreSQL":                     "tcp://" + net.JoinHostPort(gateway, db.Port()),
		"another tenant's port":          "tcp://" + net.JoinHostPort(gateway, strconv.Itoa(b.Port)),
		"another tenant's address":       "tcp://" + net.JoinHostPort(otherTenant, "8080"),
	}
	list := make([]string, 0, len(targets))
	for _, target := range targets {
		list = append(list, target)
	}
	seen := dockertest.Probe(t, cli, inspectA.ID, a.APIKey, list...)

	me := seen[targets["the tenant API"]]
	require.True(t, me.Answered, "the API answers the tenant: %+v", me)
	require.Equal(t, http.StatusOK, me.Status, "with its key")
	for _, name := range []string{"an admin route on the API port", "/metrics on the API port"} {
		r := seen[targets[name]]
		require.NotEqual(t, http.StatusOK, r.Status, "%s: %+v", name, r)
	}
	for _, name := range []string{"the admin listener", "the ops listener", "NATS", "PostgreSQL", "another tenant's port", "another tenant's address"} {
		r := seen[targets[name]]
		require.False(t, r.Answered, "%s answers from inside a tenant: %+v", name, r)
		t.Logf("%-26s %s", name+":", r.Error)
	}
}
