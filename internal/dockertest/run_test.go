package dockertest_test

import (
	"testing"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/network"
	"github.com/stretchr/testify/require"

	"github.com/convergence-dev/convergence/internal/dockertest"
)

func TestRemoveLabelled_RemovesOnlyObjectsWithTheRunLabel(t *testing.T) {
	t.Parallel()
	cli := dockertest.Client(t)
	image := dockertest.TenantImage(t)
	ctx := t.Context()
	mine, other := dockertest.NewRun(t, cli), dockertest.NewRun(t, cli)

	var ids []string
	for _, r := range []dockertest.Run{mine, other} {
		n, err := cli.NetworkCreate(ctx, r.Prefix+"-net", network.CreateOptions{Labels: r.Labels})
		require.NoError(t, err)
		c, err := cli.ContainerCreate(ctx, &container.Config{Image: image, Labels: r.Labels}, &container.HostConfig{NetworkMode: container.NetworkMode(r.Prefix + "-net")}, nil, nil, r.Prefix+"-c")
		require.NoError(t, err)
		ids = append(ids, n.ID, c.ID)
	}

	require.NoError(t, dockertest.RemoveLabelled(ctx, cli, mine.Labels))
	_, err := cli.NetworkInspect(ctx, ids[0], network.InspectOptions{})
	require.Error(t, err, "my network is gone")
	_, err = cli.ContainerInspect(ctx, ids[1])
	require.Error(t, err, "my container is gone")
	_, err = cli.NetworkInspect(ctx, ids[2], network.InspectOptions{})
	require.NoError(t, err, "the other run's network stays")
	_, err = cli.ContainerInspect(ctx, ids[3])
	require.NoError(t, err, "the other run's container stays")

	require.ErrorContains(t, dockertest.RemoveLabelled(ctx, cli, nil), "no labels")
}

func TestFreePort_TwoCalls_UsablePorts(t *testing.T) {
	t.Parallel()
	a, b := dockertest.FreePort(t), dockertest.FreePort(t)
	require.Positive(t, a)
	require.Positive(t, b)
}

func TestPortRange_TwoTests_DisjointFreeRanges(t *testing.T) {
	t.Parallel()
	a1, a2 := dockertest.PortRange(t, 20)
	b1, b2 := dockertest.PortRange(t, 20)
	require.Equal(t, 19, a2-a1)
	require.Equal(t, 19, b2-b1)
	require.True(t, a2 < b1 || b2 < a1, "ranges %d-%d and %d-%d overlap", a1, a2, b1, b2)
	require.Greater(t, a1, 3999, "away from the default tenant range")
}
