package tenanttemplates_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/convergence-dev/convergence/internal/dockertest"
	tenanttemplates "github.com/convergence-dev/convergence/tenant-templates"
)

func TestEnsureGoImage_UpToDateImage_NotRebuilt(t *testing.T) {
	t.Parallel()
	cli := dockertest.Client(t)
	tag := dockertest.TenantImage(t) // builds it when missing or stale

	img, err := tenanttemplates.EnsureGoImage(t.Context(), cli, tenanttemplates.BuildOptions{})
	require.NoError(t, err)
	require.Equal(t, tag, img.Tag)
	require.False(t, img.Built, "same source, same image")
	require.Len(t, img.ContentHash, 64)

	inspect, err := cli.ImageInspect(t.Context(), tag)
	require.NoError(t, err)
	require.Equal(t, img.ID, inspect.ID)
	require.Equal(t, "65532:65532", inspect.Config.User)
	require.Equal(t, []string{"/tenant"}, inspect.Config.Entrypoint)
	require.Equal(t, img.ContentHash, inspect.Config.Labels[tenanttemplates.LabelContentHash])
	require.Len(t, inspect.RootFS.Layers, 1, "FROM scratch plus one binary")
}
