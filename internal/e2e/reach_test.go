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

// TestReach_FromInsideATenant_OnlyTheTenantAPIAnswers looks at the platform from inside
// running tenants' network namespaces, as the tenant's code would. Through the host gateway of
// its network (the only way out to the platform), a tenant of egress class platform reaches
// only the tenant routes of the API. The admin and ops listeners, bound to every interface
// here so that only the egress policy stands in the way, NATS, PostgreSQL, and another tenant,
// on its published port or its own address, do not answer. A tenant of class none does not
// reach the API either; one of class internet reaches the API and no other port of the host.
// Only the platform's own addresses are probed: what class internet may reach beyond them is
// checked by reading the policy the kernel holds.
func TestReach_FromInsideATenant_OnlyTheTenantAPIAnswers(t *testing.T) {
	t.Parallel()
	s := startStack(t, func(c *platform.Config) {
		c.AdminAddr = net.JoinHostPort("0.0.0.0", strconv.Itoa(freePort(t)))
		c.OpsAddr = net.JoinHostPort("0.0.0.0", strconv.Itoa(freePort(t)))
		c.NATSListen = net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t)))
	})
	a, b := s.spawn(t, "reach-a", false), s.spawn(t, "reach-b", false)
	none := s.spawnWith(t, map[string]any{"name": "reach-none", "egress": "none"}, false)
	internet := s.spawnWith(t, map[string]any{"name": "reach-internet", "egress": "internet"}, false)
	require.Equal(t, "platform", a.Egress, "the default class")
	require.Equal(t, "none", none.Egress)
	require.Equal(t, "internet", internet.Egress)

	cli := dockertest.Client(t)
	inspect := func(tn tenant) (id, gateway, address string) {
		c, err := cli.ContainerInspect(t.Context(), tn.ContainerName)
		require.NoError(t, err)
		for _, ep := range c.NetworkSettings.Networks {
			gateway, address = ep.Gateway, ep.IPAddress
		}
		require.NotEmpty(t, gateway, "%s's network has a gateway", tn.Name)
		return c.ID, gateway, address
	}
	idA, gateway, _ := inspect(a)
	_, _, otherTenant := inspect(b)

	port := func(addr string) string {
		_, p, err := net.SplitHostPort(addr)
		require.NoError(t, err)
		return p
	}
	db, err := url.Parse(s.Config.DatabaseURL)
	require.NoError(t, err)
	api := func(gateway string) string {
		return "http://" + net.JoinHostPort(gateway, strconv.Itoa(s.TenantAPIPort))
	}
	ops := func(gateway string) string { return "tcp://" + net.JoinHostPort(gateway, port(s.Config.OpsAddr)) }
	targets := map[string]string{
		"the tenant API":                 api(gateway) + "/api/v1/me",
		"an admin route on the API port": api(gateway) + "/api/v1/whoami",
		"/metrics on the API port":       api(gateway) + "/metrics",
		"the admin listener":             "tcp://" + net.JoinHostPort(gateway, port(s.Config.AdminAddr)),
		"the ops listener":               ops(gateway),
		"NATS":                           "tcp://" + net.JoinHostPort(gateway, port(s.Config.NATSListen)),
		"PostgreSQL":                     "tcp://" + net.JoinHostPort(gateway, db.Port()),
		"another tenant's port":          "tcp://" + net.JoinHostPort(gateway, strconv.Itoa(b.Port)),
		"another tenant's address":       "tcp://" + net.JoinHostPort(otherTenant, "8080"),
	}
	list := make([]string, 0, len(targets))
	for _, target := range targets {
		list = append(list, target)
	}
	seen := dockertest.Probe(t, cli, idA, a.APIKey, list...)

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

	// Class none: not even the API.
	idNone, gwNone, _ := inspect(none)
	meNone := api(gwNone) + "/api/v1/me"
	r := dockertest.Probe(t, cli, idNone, none.APIKey, meNone)[meNone]
	require.False(t, r.Answered, "the API answers a tenant of egress none: %+v", r)

	// Class internet: the API, and no other port of the host.
	idNet, gwNet, _ := inspect(internet)
	meNet, opsNet := api(gwNet)+"/api/v1/me", ops(gwNet)
	seen = dockertest.Probe(t, cli, idNet, internet.APIKey, meNet, opsNet)
	require.Equal(t, http.StatusOK, seen[meNet].Status, "the API answers a tenant of egress internet: %+v", seen[meNet])
	require.False(t, seen[opsNet].Answered, "the ops listener answers a tenant of egress internet: %+v", seen[opsNet])

	// Beyond the platform, the policy is read, not tried: the kernel holds the rules that keep
	// class internet from private ranges and the metadata service.
	installed, err := s.Egress.Installed()
	require.NoError(t, err)
	require.Contains(t, installed, "forward: internet daddr 169.254.0.0/16 drop # no private, link-local, metadata or special range")
	require.Contains(t, installed, "forward: internet daddr 10.0.0.0/8 drop # no private, link-local, metadata or special range")
	require.Contains(t, installed, "forward: every tenant drop # nothing else")
}
