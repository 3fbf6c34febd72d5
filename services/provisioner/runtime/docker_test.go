package runtime_test

import (
	"log/slog"
	"net/netip"
	"strconv"
	"testing"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/network"
	"github.com/stretchr/testify/require"

	"github.com/convergence-dev/convergence/services/provisioner/runtime"
)

func TestEnsure_NewSpec_RunsHardenedHealthyContainer(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	ctx := t.Context()
	spec := h.spec(101)

	inst := h.start(ctx, spec)
	require.True(t, inst.Created)
	require.Equal(t, h.rt.ContainerName(101), inst.ContainerName)
	require.Equal(t, spec.HostPort, inst.HostPort)
	require.Equal(t, spec.SpecHash(), inst.SpecHash)

	c, err := h.cli.ContainerInspect(ctx, inst.ContainerID)
	require.NoError(t, err)
	require.True(t, c.State.Running)
	require.Equal(t, "65532:65532", c.Config.User)
	require.True(t, c.HostConfig.ReadonlyRootfs)
	require.Equal(t, []string{"ALL"}, []string(c.HostConfig.CapDrop))
	require.Empty(t, c.HostConfig.CapAdd)
	require.Contains(t, c.HostConfig.SecurityOpt, "no-new-privileges")
	require.False(t, c.HostConfig.Privileged)
	require.Equal(t, int64(64<<20), c.HostConfig.Memory)
	require.Equal(t, c.HostConfig.Memory, c.HostConfig.MemorySwap, "swap must be off")
	require.Equal(t, int64(250_000_000), c.HostConfig.NanoCPUs)
	require.NotNil(t, c.HostConfig.PidsLimit)
	require.Equal(t, int64(64), *c.HostConfig.PidsLimit)
	require.Contains(t, c.HostConfig.Tmpfs["/tmp"], "noexec")
	require.Contains(t, c.HostConfig.Tmpfs["/tmp"], "nosuid")
	require.Contains(t, c.HostConfig.Tmpfs["/tmp"], "size=")
	require.Empty(t, c.Mounts, "nothing may be mounted, least of all the docker socket")
	require.Equal(t, container.RestartPolicyOnFailure, c.HostConfig.RestartPolicy.Name)
	require.Positive(t, c.HostConfig.RestartPolicy.MaximumRetryCount)
	require.Equal(t, "json-file", c.HostConfig.LogConfig.Type)
	require.Equal(t, "10m", c.HostConfig.LogConfig.Config["max-size"])
	require.Equal(t, h.rt.NetworkName(101), string(c.HostConfig.NetworkMode))
	require.Equal(t, "127.0.0.1", c.HostConfig.PortBindings["8080/tcp"][0].HostIP)
	require.Equal(t, strconv.Itoa(spec.HostPort), c.HostConfig.PortBindings["8080/tcp"][0].HostPort)
	require.Contains(t, c.Config.Env, "PORT=8080")
	require.Contains(t, c.Config.Env, "CONVERGENCE_ENV_ID=101")
	for k, v := range map[string]string{
		runtime.LabelManaged: "true", runtime.LabelEnvID: "101", runtime.LabelOrgID: "7",
		runtime.LabelGeneration: "1", runtime.LabelSpecHash: spec.SpecHash(),
	} {
		require.Equal(t, v, c.Config.Labels[k], "container label %s", k)
	}

	n, err := h.cli.NetworkInspect(ctx, h.rt.NetworkName(101), network.InspectOptions{})
	require.NoError(t, err)
	require.Equal(t, "bridge", n.Driver)
	require.Equal(t, spec.SpecHash(), n.Labels[runtime.LabelSpecHash])
	require.Equal(t, "101", n.Labels[runtime.LabelEnvID])
	require.Len(t, n.IPAM.Config, 1)
	subnet, err := netip.ParsePrefix(n.IPAM.Config[0].Subnet)
	require.NoError(t, err)
	require.Equal(t, 28, subnet.Bits())
	require.True(t, netip.MustParsePrefix(runtime.DefaultSubnetPool).Contains(subnet.Addr()), "subnet %s from the pool", subnet)

	status, body := get(t, ctx, "http://127.0.0.1:"+strconv.Itoa(spec.HostPort)+"/health")
	require.Equal(t, 200, status)
	require.JSONEq(t, `{"status":"ok"}`, body)
}

func TestEnsure_SubnetPoolUsedUp_ErrNoSubnetAndNothingLeft(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	ctx := t.Context()
	// A pool of two /28 subnets, used by this test only.
	rt, err := runtime.NewDocker(h.cli, runtime.DockerConfig{
		NamePrefix: h.run.Prefix,
		Labels:     h.run.Labels,
		SubnetPool: "10.214.7.0/27",
		SubnetBits: 28,
	}, slog.New(slog.DiscardHandler))
	require.NoError(t, err)

	subnets := map[string]bool{}
	for _, envID := range []int64{121, 122} {
		inst, err := rt.Ensure(ctx, h.spec(envID))
		require.NoError(t, err)
		n, err := h.cli.NetworkInspect(ctx, inst.NetworkID, network.InspectOptions{})
		require.NoError(t, err)
		subnets[n.IPAM.Config[0].Subnet] = true
	}
	require.Equal(t, map[string]bool{"10.214.7.0/28": true, "10.214.7.16/28": true}, subnets)

	_, err = rt.Ensure(ctx, h.spec(123))
	require.ErrorIs(t, err, runtime.ErrNoSubnet)
	h.requireGone(ctx, 123)
}
