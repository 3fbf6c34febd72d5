package runtime_test

import (
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/convergence-dev/convergence/services/provisioner/runtime"
)

// Two installations on one engine, with the same prefix and one without an instance id (from
// before them): each makes its tenant 1, sees only its own objects, and removing its tenant
// leaves the others' alone.
func TestInstances_SamePrefixOnOneEngine_NeverTouchEachOther(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	ctx := t.Context()
	runtimeOf := func(instance string) *runtime.Docker {
		rt, err := runtime.NewDocker(h.cli, runtime.DockerConfig{
			NamePrefix: h.run.Prefix, Labels: h.run.Labels, Instance: instance, ReplaceGrace: time.Second,
		}, slog.New(slog.DiscardHandler))
		require.NoError(t, err)
		return rt
	}
	a, b, legacy := runtimeOf("aaaa1111"), runtimeOf("bbbb2222"), h.docker
	require.Equal(t, h.run.Prefix+"-aaaa1111-env-1", a.ContainerName(1))
	require.Equal(t, h.run.Prefix+"-env-1", legacy.ContainerName(1))

	for _, rt := range []*runtime.Docker{a, b, legacy} {
		spec := h.spec(1)
		spec.Secrets = map[string]string{"api-key": "sk_tenant_x"}
		_, err := rt.Ensure(ctx, spec)
		require.NoError(t, err, "each installation makes its own tenant 1: no name clash")
	}
	for _, rt := range []*runtime.Docker{a, b, legacy} {
		objects, err := rt.List(ctx)
		require.NoError(t, err)
		var names []string
		for _, o := range objects {
			names = append(names, o.Name)
		}
		require.ElementsMatch(t, []string{rt.ContainerName(1), rt.NetworkName(1), rt.VolumeName(1)}, names,
			"an installation lists its own objects only")
	}

	_, err := a.Remove(ctx, 1, 0)
	require.NoError(t, err)
	for _, rt := range []*runtime.Docker{b, legacy} {
		objects, err := rt.List(ctx)
		require.NoError(t, err)
		require.Len(t, objects, 3, "the others' tenant 1 is untouched")
	}
	_, err = runtime.NewDocker(h.cli, runtime.DockerConfig{NamePrefix: h.run.Prefix, Instance: "Bad/1"}, slog.New(slog.DiscardHandler))
	require.ErrorContains(t, err, "instance")
}
