package provisioner_test

import (
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/swarm"
	"github.com/docker/docker/client"
	"github.com/stretchr/testify/require"

	"github.com/convergence-dev/convergence/services/provisioner/runtime"
)

func TestSwarm_SpawnStatusLogsDestroy_ServiceWithItsKeyAsASecretThenNothingLeft(t *testing.T) {
	t.Parallel()
	h := newHarness(t, onSwarm(t))
	ctx := t.Context()
	tenant := h.spawn("swarmy")
	envID, port := envIDOf(tenant), int(tenant["port"].(float64))
	key := tenant["apiKey"].(string)
	name := h.svc.Runtime().ContainerName(envID)

	svc, _, err := h.cli.ServiceInspectWithRaw(ctx, name, swarm.ServiceInspectOptions{})
	require.NoError(t, err, "the tenant is a swarm service")
	cs := svc.Spec.TaskTemplate.ContainerSpec
	require.Len(t, cs.Secrets, 1)
	require.Equal(t, "api-key", cs.Secrets[0].File.Name)
	require.Contains(t, cs.Env, "CONVERGENCE_API_KEY_FILE="+runtime.SecretsDir+"/api-key")
	for _, kv := range cs.Env {
		require.NotContains(t, kv, key, "the key is not in the environment")
	}
	code, _ := get(t, healthURL(port))
	require.Equal(t, http.StatusOK, code)
	require.NoFileExists(t, h.svc.ComposeFilePath(envID), "no compose file describes a service")

	st := h.status(envID)
	require.Equal(t, "running", st["status"])
	live := st["container"].(map[string]any)
	require.Equal(t, "running", live["state"])
	require.InDelta(t, port, live["port"], 0)
	require.Positive(t, live["memoryBytes"].(float64), "usage of a task on this node")
	logs := h.raw(http.MethodGet, tenantPath(envID, "/logs?tail=50"), nil)
	require.Equal(t, http.StatusOK, logs.code)
	require.Contains(t, string(logs.body), "tenant listening")

	code, body := h.do(http.MethodDelete, tenantPath(envID, ""), nil)
	require.Equal(t, http.StatusOK, code, "%v", body)
	require.Equal(t, "destroyed", body["tenant"].(map[string]any)["status"])
	_, _, err = h.cli.ServiceInspectWithRaw(ctx, name, swarm.ServiceInspectOptions{})
	require.True(t, client.IsErrNotFound(err), "service inspect: %v", err) //nolint:staticcheck // containerd/errdefs is not a direct requirement yet.
	secrets, err := h.cli.SecretList(ctx, swarm.SecretListOptions{Filters: filters.NewArgs(filters.Arg("label", runtime.LabelEnvID+"="+strconv.FormatInt(envID, 10)))})
	require.NoError(t, err)
	for _, s := range secrets {
		require.NotEqual(t, h.run.ID, s.Spec.Labels["convergence.test.run"], "secret %s left", s.Spec.Name)
	}
	require.Eventually(t, func() bool {
		_, err := h.cli.NetworkInspect(ctx, h.svc.Runtime().NetworkName(envID), network.InspectOptions{})
		return client.IsErrNotFound(err) //nolint:staticcheck // see above.
	}, 10*time.Second, 50*time.Millisecond, "network removed")
	require.Zero(t, h.leasedPort(envID), "port lease released")
}
