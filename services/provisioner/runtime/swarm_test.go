package runtime_test

import (
	"context"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/swarm"
	"github.com/docker/docker/api/types/versions"
	"github.com/docker/go-connections/nat"
	"github.com/stretchr/testify/require"

	"github.com/convergence-dev/convergence/services/provisioner/egress"
	"github.com/convergence-dev/convergence/services/provisioner/runtime"
)

// knownDifference asserts one of the things Swarm cannot enforce on this engine that the
// README lists, by name: enforced says whether the engine applied it after all. A difference
// that went away fails the test, so the runtime starts checking it and the README drops it.
func knownDifference(t *testing.T, name string, enforced bool, why string) {
	t.Helper()
	require.False(t, enforced, "known difference %q no longer holds on this engine (%s): verify it in the Swarm runtime and drop it from the README", name, why)
	t.Logf("known difference %q: %s", name, why)
}

func TestSwarmEnsure_NewSpec_RunsHardenedHealthyService(t *testing.T) {
	t.Parallel()
	h := newHarnessOf(t, kindSwarm)
	ctx := t.Context()
	spec := h.spec(201)
	spec.Secrets = map[string]string{"api-key": "sk_tenant_swarm_" + h.run.ID}
	require.NoError(t, h.swarm.CheckManager(ctx), "the engine manages the test's swarm")
	inst := h.start(ctx, spec)
	require.True(t, inst.Created)
	require.Equal(t, h.rt.ContainerName(201), inst.ContainerName)

	svc, _, err := h.cli.ServiceInspectWithRaw(ctx, inst.ContainerID, swarm.ServiceInspectOptions{})
	require.NoError(t, err)
	require.Equal(t, uint64(1), *svc.Spec.Mode.Replicated.Replicas, "one replica")
	cs := svc.Spec.TaskTemplate.ContainerSpec
	require.True(t, strings.HasPrefix(cs.Image, "sha256:"), "the image by id, which no node pulls: %s", cs.Image)
	require.Equal(t, h.image, svc.Spec.Labels[runtime.LabelImage])
	require.Equal(t, "65532:65532", cs.User)
	require.True(t, cs.ReadOnly)
	require.Equal(t, []string{"ALL"}, cs.CapabilityDrop)
	require.Empty(t, cs.CapabilityAdd)
	limits := svc.Spec.TaskTemplate.Resources.Limits
	require.Equal(t, runtime.Limits{MemoryBytes: 64 << 20, NanoCPUs: 250_000_000, PIDs: 64},
		runtime.Limits{MemoryBytes: limits.MemoryBytes, NanoCPUs: limits.NanoCPUs, PIDs: limits.Pids})
	rp := svc.Spec.TaskTemplate.RestartPolicy
	require.Equal(t, swarm.RestartPolicyConditionOnFailure, rp.Condition)
	require.Equal(t, uint64(runtime.DefaultRestartRetries), *rp.MaxAttempts)
	require.Equal(t, "json-file", svc.Spec.TaskTemplate.LogDriver.Name)
	for k, v := range map[string]string{
		runtime.LabelManaged: "true", runtime.LabelEnvID: "201", runtime.LabelOrgID: "7",
		runtime.LabelGeneration: "1", runtime.LabelSpecHash: spec.SpecHash(),
	} {
		require.Equal(t, v, svc.Spec.Labels[k], "service label %s", k)
		require.Equal(t, v, cs.Labels[k], "container label %s", k)
	}
	require.Len(t, svc.Spec.EndpointSpec.Ports, 1)
	port := svc.Spec.EndpointSpec.Ports[0]
	require.Equal(t, uint32(spec.HostPort), port.PublishedPort)
	require.Equal(t, uint32(8080), port.TargetPort)

	// The key is a secret mounted as a file, owned by the tenant's user, never in the
	// environment.
	require.Len(t, cs.Secrets, 1)
	require.Equal(t, "api-key", cs.Secrets[0].File.Name, "mounted as "+runtime.SecretsDir+"/api-key")
	require.Equal(t, "65532", cs.Secrets[0].File.UID)
	require.Equal(t, os.FileMode(0o400), cs.Secrets[0].File.Mode)
	for _, e := range cs.Env {
		require.NotContains(t, e, "sk_tenant_swarm_", "the key never goes into the environment")
	}

	n, err := h.cli.NetworkInspect(ctx, h.rt.NetworkName(201), network.InspectOptions{})
	require.NoError(t, err)
	require.Equal(t, "overlay", n.Driver)
	require.False(t, n.Internal, "class platform reaches the API, so its network has a way out")
	require.Equal(t, spec.SpecHash(), n.Labels[runtime.LabelSpecHash])

	// What the task's container got from its node's engine.
	st, err := h.rt.Inspect(ctx, 201)
	require.NoError(t, err)
	c, err := h.cli.ContainerInspect(ctx, st.ContainerID)
	require.NoError(t, err)
	require.Equal(t, "65532:65532", c.Config.User)
	require.True(t, c.HostConfig.ReadonlyRootfs)
	require.Equal(t, []string{"ALL"}, []string(c.HostConfig.CapDrop))
	require.False(t, c.HostConfig.Privileged)
	require.Equal(t, int64(64<<20), c.HostConfig.Memory)
	require.Equal(t, int64(250_000_000), c.HostConfig.NanoCPUs)
	require.NotNil(t, c.HostConfig.PidsLimit)
	require.Equal(t, int64(64), *c.HostConfig.PidsLimit)
	require.Equal(t, []string{"host.docker.internal:host-gateway"}, c.HostConfig.ExtraHosts, "swarm's hosts(5) line, back in the engine's form")
	require.True(t, slices.ContainsFunc(c.Mounts, func(m container.MountPoint) bool { return m.Type == "tmpfs" && m.Destination == "/tmp" }), "a tmpfs /tmp: %v", c.Mounts)
	require.False(t, slices.ContainsFunc(c.Mounts, func(m container.MountPoint) bool { return strings.Contains(m.Source, "docker.sock") }))

	status, body := get(t, ctx, "http://127.0.0.1:"+strconv.Itoa(spec.HostPort)+"/health")
	require.Equal(t, 200, status)
	require.JSONEq(t, `{"status":"ok"}`, body)

	// What a service cannot ask of this engine, asserted so it is never mistaken for done.
	apiVersion := h.cli.ClientVersion()
	knownDifference(t, "no-new-privileges", slices.Contains(c.HostConfig.SecurityOpt, "no-new-privileges"),
		"a service's Privileges.NoNewPrivileges needs engine API 1.46; this engine speaks "+apiVersion)
	if versions.LessThan(apiVersion, "1.46") {
		p := svc.Spec.TaskTemplate.ContainerSpec.Privileges
		require.False(t, p != nil && p.NoNewPrivileges, "the manager dropped the field it does not know")
	}
	knownDifference(t, "swap", c.HostConfig.MemorySwap == c.HostConfig.Memory,
		"a service has no memory+swap limit: the engine allows swap up to the memory limit again")
	knownDifference(t, "host-ip", c.HostConfig.PortBindings["8080/tcp"] != nil && slices.ContainsFunc(c.HostConfig.PortBindings["8080/tcp"], func(b nat.PortBinding) bool { return b.HostIP == "127.0.0.1" }),
		"swarm publishes on every interface, never on one address")
}

func TestSwarmEnsure_EgressNone_InternalOverlayThroughTheMeshOnly(t *testing.T) {
	t.Parallel()
	h := newHarnessOf(t, kindSwarm)
	ctx := t.Context()
	mesh := h.ingressSwarm()
	internal := func(envID int64) bool {
		n, err := h.cli.NetworkInspect(ctx, h.rt.NetworkName(envID), network.InspectOptions{})
		require.NoError(t, err)
		require.Equal(t, "overlay", n.Driver)
		return n.Internal
	}

	spec := h.spec(202)
	spec.Egress = egress.None
	_, err := mesh.Ensure(ctx, spec)
	require.NoError(t, err)
	require.True(t, internal(202), "class none: the tenant's own network has no way out")

	spec = h.spec(205)
	spec.Egress = egress.None
	h.start(ctx, spec)
	knownDifference(t, "egress-classes", internal(205),
		"the host's firewall rules match only the Docker runtime's bridges, and a task with a published port "+
			"has a way out through docker_gwbridge; in host mode an internal network would also leave the port unreachable")
}

func TestSwarmPutSecrets_NewKey_NewSecretAndTaskOldOneRemoved(t *testing.T) {
	t.Parallel()
	h := newHarnessOf(t, kindSwarm)
	ctx := t.Context()
	spec := h.spec(203)
	spec.Secrets = map[string]string{"api-key": "sk_tenant_old"}
	h.start(ctx, spec)
	before, err := h.rt.Inspect(ctx, 203)
	require.NoError(t, err)
	secretsOf := func() []string {
		objs, err := h.rt.List(ctx)
		require.NoError(t, err)
		var names []string
		for _, o := range objs {
			if o.Kind == runtime.KindSecret {
				names = append(names, o.Name)
			}
		}
		return names
	}
	old := secretsOf()
	require.Len(t, old, 1)

	require.NoError(t, h.rt.PutSecrets(ctx, 203, map[string]string{"api-key": "sk_tenant_new"}))
	now := secretsOf()
	require.Len(t, now, 1, "the replaced secret is removed")
	require.NotEqual(t, old, now)
	require.NoError(t, h.rt.PutSecrets(ctx, 203, map[string]string{"api-key": "sk_tenant_new"}), "the same key again is a no-op")
	require.Equal(t, now, secretsOf())

	// A secret cannot change in place: swarm gives the tenant a new task.
	var after runtime.Status
	require.Eventually(t, func() bool {
		after, err = h.rt.Inspect(ctx, 203)
		return err == nil && after.State == runtime.StateRunning && after.ContainerID != before.ContainerID
	}, 30*time.Second, 100*time.Millisecond)
	knownDifference(t, "put-secrets-restarts", after.ContainerID == before.ContainerID,
		"a new key replaces the tenant's task, where Docker writes the file into the running container")
	wctx, cancel := context.WithTimeout(ctx, tenantTimeout)
	defer cancel()
	require.NoError(t, h.rt.WaitHealthy(wctx, 203, spec.HostPort))

	require.ErrorIs(t, h.rt.PutSecrets(ctx, 299, map[string]string{"api-key": "x"}), runtime.ErrNotFound)
}

func TestSwarm_RoutingMesh_PublishesThroughIngress(t *testing.T) {
	t.Parallel()
	h := newHarnessOf(t, kindSwarm)
	ctx := t.Context()
	rt := h.ingressSwarm()
	spec := h.spec(204)
	inst, err := rt.Ensure(ctx, spec)
	require.NoError(t, err)
	svc, _, err := h.cli.ServiceInspectWithRaw(ctx, inst.ContainerID, swarm.ServiceInspectOptions{})
	require.NoError(t, err)
	require.Equal(t, swarm.PortConfigPublishModeIngress, svc.Spec.EndpointSpec.Ports[0].PublishMode, "the routing mesh by default")

	// The routing mesh forwards only to a task whose health check passed, which the
	// template's first check says after about 10 s.
	require.Eventually(t, func() bool {
		st, err := rt.Inspect(ctx, 204)
		return err == nil && st.State == runtime.StateRunning && st.Health == runtime.HealthHealthy
	}, 40*time.Second, 200*time.Millisecond, "the task runs and its health check passes")
	if _, err := os.Stat("/proc/sys/net/ipv4/vs"); err != nil {
		// The mesh balances with the kernel's IPVS; without it the engine logs "ipvs is not
		// enabled in your kernel" and publishes nothing.
		probe := rt.Probe(ctx, spec.HostPort)
		knownDifference(t, "routing-mesh-without-ipvs", probe == nil,
			"this kernel has no IPVS, so the routing mesh cannot forward; use provisioner.runtime.swarm-publish-mode=host here")
		return
	}
	wctx, cancel := context.WithTimeout(ctx, tenantTimeout)
	defer cancel()
	require.NoError(t, rt.WaitHealthy(wctx, 204, spec.HostPort))
}
