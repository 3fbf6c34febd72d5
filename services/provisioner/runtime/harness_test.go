package runtime_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"
	"github.com/stretchr/testify/require"

	"github.com/convergence-dev/convergence/internal/dockertest"
	"github.com/convergence-dev/convergence/services/provisioner/runtime"
)

// tenantTimeout bounds each tenant's way from Ensure to healthy in tests.
const tenantTimeout = 20 * time.Second

// harness is one test's runtime on the real engine, scoped to its own labels and names.
type harness struct {
	t     *testing.T
	cli   *client.Client
	rt    *runtime.Docker
	run   dockertest.Run
	image string
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	cli := dockertest.Client(t)
	image := dockertest.TenantImage(t)
	run := dockertest.NewRun(t, cli)
	rt, err := runtime.NewDocker(cli, runtime.DockerConfig{
		NamePrefix:   run.Prefix,
		Labels:       run.Labels,
		ReplaceGrace: 2 * time.Second,
	}, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	return &harness{t: t, cli: cli, rt: rt, run: run, image: image}
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

// requireGone asserts that the tenant's container and network no longer exist.
func (h *harness) requireGone(ctx context.Context, envID int64) {
	h.t.Helper()
	_, err := h.cli.ContainerInspect(ctx, h.rt.ContainerName(envID))
	require.True(h.t, client.IsErrNotFound(err), "container %s still exists (err=%v)", h.rt.ContainerName(envID), err) //nolint:staticcheck // containerd/errdefs is not a direct requirement yet.
	_, err = h.cli.NetworkInspect(ctx, h.rt.NetworkName(envID), network.InspectOptions{})
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
