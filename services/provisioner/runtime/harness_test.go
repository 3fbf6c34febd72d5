package runtime_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/swarm"
	"github.com/docker/docker/client"
	"github.com/stretchr/testify/require"

	"github.com/convergence-dev/convergence/internal/dockertest"
	"github.com/convergence-dev/convergence/services/provisioner/runtime"
	"github.com/convergence-dev/convergence/services/provisioner/runtime/swarmtest"
)

// tenantTimeout bounds each tenant's way from Ensure to healthy in tests.
const tenantTimeout = 20 * time.Second

// Runtimes the conformance tests run against.
const (
	kindDocker = "docker"
	kindSwarm  = "swarm"
)

// harness is one test's runtime on the real engine, scoped to its own labels and names.
type harness struct {
	t   *testing.T
	cli *client.Client
	// kind is kindDocker or kindSwarm; rt is the runtime under test, and docker or swarm the
	// same runtime as its own type.
	kind   string
	rt     runtime.Runtime
	docker *runtime.Docker
	swarm  *runtime.Swarm
	run    dockertest.Run
	image  string
}

// newHarness returns a harness on the Docker runtime.
func newHarness(t *testing.T) *harness { return newHarnessOf(t, kindDocker) }

// newHarnessOf returns a harness on the runtime kind. A swarm harness makes the engine a
// single-node swarm first if it is none (see swarmtest.Require), and removes the test's services,
// secrets and networks when the test ends.
func newHarnessOf(t *testing.T, kind string) *harness {
	t.Helper()
	cli := dockertest.Client(t)
	image := dockertest.TenantImage(t)
	if kind == kindSwarm {
		swarmtest.Require(t)
	}
	run := dockertest.NewRun(t, cli)
	cfg := runtime.DockerConfig{
		NamePrefix:   run.Prefix,
		Labels:       run.Labels,
		ReplaceGrace: 2 * time.Second,
	}
	h := &harness{t: t, cli: cli, kind: kind, run: run, image: image}
	switch kind {
	case kindDocker:
		rt, err := runtime.NewDocker(cli, cfg, slog.New(slog.DiscardHandler))
		require.NoError(t, err)
		h.rt, h.docker = rt, rt
	case kindSwarm:
		// Swarm publishes on every interface and says so; the tests only ever send to
		// 127.0.0.1. Ports are published in host mode: the routing mesh needs the kernel's
		// IPVS, which not every test machine has (TestSwarm_RoutingMesh covers it).
		cfg.HostIP = "0.0.0.0"
		// As the provisioner configures it, for a tenant API on the host.
		cfg.ExtraHosts = []string{"host.docker.internal:host-gateway"}
		rt, err := runtime.NewSwarm(cli, cfg, runtime.SwarmConfig{PublishMode: runtime.PublishHost}, slog.New(slog.DiscardHandler))
		require.NoError(t, err)
		h.rt, h.swarm = rt, rt
		// Registered after NewRun's cleanup, so it runs before it: services first, which
		// takes their tasks' containers off the networks NewRun's cleanup removes.
		t.Cleanup(func() { swarmtest.RemoveLabelled(t, cli, run.Labels) })
	default:
		t.Fatalf("unknown runtime %q", kind)
	}
	return h
}

// ingressSwarm returns a swarm runtime of the test's run with the default publish mode, the
// routing mesh, where the harness's publishes in host mode.
func (h *harness) ingressSwarm() *runtime.Swarm {
	h.t.Helper()
	rt, err := runtime.NewSwarm(h.cli, runtime.DockerConfig{
		NamePrefix: h.run.Prefix, Labels: h.run.Labels, HostIP: "0.0.0.0", ReplaceGrace: 2 * time.Second,
	}, runtime.SwarmConfig{}, slog.New(slog.DiscardHandler))
	require.NoError(h.t, err)
	return rt
}

// eachRuntime runs test as a parallel subtest against each runtime, named after it.
func eachRuntime(t *testing.T, test func(t *testing.T, h *harness)) {
	t.Helper()
	for _, kind := range []string{kindDocker, kindSwarm} {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			test(t, newHarnessOf(t, kind))
		})
	}
}

// spec returns a valid spec for envID on a free host port.
func (h *harness) spec(envID int64) runtime.Spec {
	return runtime.Spec{
		EnvID:    envID,
		OrgID:    7,
		Name:     "acme-" + strconv.FormatInt(envID, 10),
		Image:    h.image,
		HostPort: dockertest.FreePort(h.t),
		Env: map[string]string{
			"CONVERGENCE_API_URL": "http://host.docker.internal:3000",
			"CONVERGENCE_API_KEY": "sk_tenant_test_" + h.run.ID,
			"CONVERGENCE_ENV_ID":  strconv.FormatInt(envID, 10),
		},
		Limits: runtime.Limits{
			MemoryBytes: 64 << 20,
			NanoCPUs:    250_000_000,
			PIDs:        64,
		},
		Generation: 1,
	}
}

// start ensures spec and waits until the tenant is healthy.
func (h *harness) start(ctx context.Context, spec runtime.Spec) runtime.Instance {
	h.t.Helper()
	inst, err := h.rt.Ensure(ctx, spec)
	require.NoError(h.t, err)
	wctx, cancel := context.WithTimeout(ctx, tenantTimeout)
	defer cancel()
	require.NoError(h.t, h.rt.WaitHealthy(wctx, spec.EnvID, spec.HostPort))
	return inst
}

// get fetches url from the host and returns status and body.
func get(t *testing.T, ctx context.Context, url string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	require.NoError(t, err)
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
	resp, err := c.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(body)
}

// requireGone asserts that the tenant's container (or service and secrets) and network no
// longer exist.
func (h *harness) requireGone(ctx context.Context, envID int64) {
	h.t.Helper()
	if h.kind == kindSwarm {
		_, _, err := h.cli.ServiceInspectWithRaw(ctx, h.rt.ContainerName(envID), swarm.ServiceInspectOptions{})
		require.True(h.t, client.IsErrNotFound(err), "service %s still exists (err=%v)", h.rt.ContainerName(envID), err) //nolint:staticcheck // containerd/errdefs is not a direct requirement yet.
		secrets, err := h.cli.SecretList(ctx, swarm.SecretListOptions{Filters: filters.NewArgs(
			filters.Arg("label", dockertest.RunLabel+"="+h.run.ID), filters.Arg("label", runtime.LabelEnvID+"="+strconv.FormatInt(envID, 10)))})
		require.NoError(h.t, err)
		require.Empty(h.t, secrets, "the tenant's secrets are removed")
	} else {
		_, err := h.cli.ContainerInspect(ctx, h.rt.ContainerName(envID))
		require.True(h.t, client.IsErrNotFound(err), "container %s still exists (err=%v)", h.rt.ContainerName(envID), err) //nolint:staticcheck // containerd/errdefs is not a direct requirement yet.
	}
	_, err := h.cli.NetworkInspect(ctx, h.rt.NetworkName(envID), network.InspectOptions{})
	require.True(h.t, client.IsErrNotFound(err), "network %s still exists (err=%v)", h.rt.NetworkName(envID), err) //nolint:staticcheck // see above.
}

// newOfflineRuntime returns a runtime whose client points nowhere, for tests of what the
// runtime computes without the engine (NewDocker makes no call).
func newOfflineRuntime(t *testing.T, cfg runtime.DockerConfig) *runtime.Docker {
	t.Helper()
	cli, err := client.NewClientWithOpts(client.WithHost("unix:///nonexistent/docker.sock"))
	require.NoError(t, err)
	t.Cleanup(func() { _ = cli.Close() })
	rt, err := runtime.NewDocker(cli, cfg, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	return rt
}

// stopContainer stops the container of the tenant's workload with SIGTERM (the template exits
// cleanly), as an operator or a crash would, and waits until the runtime reports it stopped:
// swarm learns of it from its node a moment later.
func (h *harness) stopContainer(ctx context.Context, envID int64) {
	h.t.Helper()
	st, err := h.rt.Inspect(ctx, envID)
	require.NoError(h.t, err)
	require.NotEmpty(h.t, st.ContainerID)
	timeout := 5
	require.NoError(h.t, h.cli.ContainerStop(ctx, st.ContainerID, container.StopOptions{Timeout: &timeout}))
	require.Eventually(h.t, func() bool {
		st, err := h.rt.Inspect(ctx, envID)
		return err == nil && st.State == runtime.StateExited
	}, 10*time.Second, 50*time.Millisecond, "the runtime reports the tenant stopped")
}
