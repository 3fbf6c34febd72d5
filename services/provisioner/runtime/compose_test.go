package runtime_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/network"
	"github.com/stretchr/testify/require"

	"github.com/convergence-dev/convergence/internal/dockertest"
	"github.com/convergence-dev/convergence/services/provisioner/runtime"
)

func TestComposeFile_ComposeUp_RunsTheSameContainer(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	ctx := t.Context()
	spec := h.spec(120)
	spec.Env["CONVERGENCE_API_URL"] = "http://api:3000/$not_a_variable"
	spec.Secrets = map[string]string{"api-key": "sk_tenant_never_in_the_file"}

	// The container the runtime makes, as the reference.
	inst := h.start(ctx, spec)
	want, err := h.cli.ContainerInspect(ctx, inst.ContainerID)
	require.NoError(t, err)
	_, err = h.rt.Remove(ctx, spec.EnvID, 5*time.Second)
	require.NoError(t, err)

	file, err := h.docker.ComposeFile(spec)
	require.NoError(t, err)
	require.NotContains(t, string(file), "sk_tenant_never_in_the_file", "secrets stay out of the file")
	path := filepath.Join(t.TempDir(), "docker-compose.yml")
	require.NoError(t, os.WriteFile(path, file, 0o600))
	project := h.run.Prefix + "-compose"
	dockertest.Compose(ctx, t, "-p", project, "-f", path, "up", "-d")
	t.Cleanup(func() {
		cctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		dockertest.Compose(cctx, t, "-p", project, "-f", path, "down", "--timeout", "2")
	})

	// The runtime sees the compose container as its tenant, healthy and up to date.
	wctx, cancel := context.WithTimeout(ctx, tenantTimeout)
	defer cancel()
	require.NoError(t, h.rt.WaitHealthy(wctx, spec.EnvID, spec.HostPort))
	again, err := h.rt.Ensure(ctx, spec)
	require.NoError(t, err)
	require.False(t, again.Created, "same name and spec hash: nothing to do")

	got, err := h.cli.ContainerInspect(ctx, again.ContainerID)
	require.NoError(t, err)
	require.Equal(t, want.Config.Image, got.Config.Image)
	require.Equal(t, want.Config.User, got.Config.User)
	require.ElementsMatch(t, want.Config.Env, got.Config.Env)
	require.Contains(t, got.Config.Env, "CONVERGENCE_API_URL=http://api:3000/$not_a_variable", "no interpolation")
	require.Len(t, got.Mounts, 1)
	require.Equal(t, h.docker.VolumeName(spec.EnvID), got.Mounts[0].Name, "the secrets volume the runtime would make")
	for k, v := range want.Config.Labels {
		require.Equal(t, v, got.Config.Labels[k], "label %s", k)
	}
	w, g := want.HostConfig, got.HostConfig
	require.Equal(t, w.ReadonlyRootfs, g.ReadonlyRootfs)
	require.Equal(t, w.Tmpfs, g.Tmpfs)
	require.Equal(t, normalize(w.CapDrop), normalize(g.CapDrop))
	require.Equal(t, w.SecurityOpt, g.SecurityOpt)
	require.Equal(t, w.Memory, g.Memory)
	require.Equal(t, w.MemorySwap, g.MemorySwap)
	require.Equal(t, w.NanoCPUs, g.NanoCPUs)
	require.Equal(t, *w.PidsLimit, *g.PidsLimit)
	require.Equal(t, w.RestartPolicy, g.RestartPolicy)
	require.Equal(t, w.LogConfig, g.LogConfig)
	require.Equal(t, w.PortBindings, g.PortBindings)
	require.Equal(t, w.NetworkMode, g.NetworkMode)
	require.Equal(t, w.Privileged, g.Privileged)
	require.Empty(t, g.CapAdd)
	n, err := h.cli.NetworkInspect(ctx, string(g.NetworkMode), network.InspectOptions{})
	require.NoError(t, err)
	require.Equal(t, "120", n.Labels[runtime.LabelEnvID])

	status, body := get(t, ctx, "http://127.0.0.1:"+strconv.Itoa(spec.HostPort)+"/health")
	require.Equal(t, 200, status)
	require.JSONEq(t, `{"status":"ok"}`, body)
}

func TestComposeFile_SpecialCharacters_QuotedAndNotInterpolated(t *testing.T) {
	t.Parallel()
	rt := newOfflineRuntime(t, runtime.DockerConfig{NetworkMTU: 1400, ExtraHosts: []string{"host.docker.internal:host-gateway"}})
	spec := runtime.Spec{
		EnvID: 5, OrgID: 1, Name: "quotes", Image: "convergence/tenant-go:dev", HostPort: 3005,
		Env: map[string]string{"WEIRD": "a \"quoted\" $HOME\nsecond: line # not a comment"},
	}
	b, err := rt.ComposeFile(spec)
	require.NoError(t, err)
	s := string(b)
	require.Contains(t, s, `"WEIRD": "a \"quoted\" $$HOME\nsecond: line # not a comment"`)
	require.Contains(t, s, `"com.docker.network.driver.mtu": "1400"`)
	require.Contains(t, s, `- "host.docker.internal:host-gateway"`)
	require.Contains(t, s, `- "127.0.0.1:3005:8080/tcp"`)
	require.Contains(t, s, `mem_limit: 268435456`)
	require.Contains(t, s, `memswap_limit: 268435456`)
	require.Contains(t, s, `cpus: 0.5`)
	require.Contains(t, s, `"PORT": "8080"`)
	for _, line := range strings.Split(s, "\n") {
		require.NotContains(t, line, "\t", "YAML forbids tabs in indentation")
	}

	_, err = rt.ComposeFile(runtime.Spec{})
	require.ErrorIs(t, err, runtime.ErrInvalidSpec)
}

func normalize(s []string) []string {
	out := slices.Clone(s)
	slices.Sort(out)
	return out
}
