package runtime

import (
	"log/slog"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/convergence-dev/convergence/internal/dockertest"
	"github.com/convergence-dev/convergence/services/provisioner/runtime/swarmtest"
)

// BenchmarkSpawnToHealthy_SwarmVsDocker measures the time from nothing to a tenant answering
// /health (Ensure + WaitHealthy) on the Swarm runtime beside the Docker runtime, measured in
// the same run: each iteration spawns one tenant on Docker, removes it, then does the same on
// Swarm. Removal is not timed. It reports p50 and p95 per runtime in milliseconds and Swarm's
// ratio to Docker at p50. Swarm publishes in host mode, as the conformance tests run it. It
// skips unless CONVERGENCE_TEST_SWARM=1; the engine is made a single-node swarm if it is in
// none, and left as found when the test binary ends (swarmtest).
//
//	CONVERGENCE_TEST_SWARM=1 go test -run '^$' -bench SpawnToHealthy_SwarmVsDocker -benchtime 5x ./services/provisioner/runtime/
func BenchmarkSpawnToHealthy_SwarmVsDocker(b *testing.B) {
	swarmtest.Require(b)
	cli := dockertest.Client(b)
	image := dockertest.TenantImage(b)
	log := slog.New(slog.DiscardHandler)
	// The tenants differ only in their runtime: the same config but for the host address,
	// which swarm requires to be every interface.
	config := func(run dockertest.Run) DockerConfig {
		return DockerConfig{NamePrefix: run.Prefix, Labels: run.Labels, ReplaceGrace: time.Second,
			ExtraHosts: []string{"host.docker.internal:host-gateway"}}
	}
	d, err := NewDocker(cli, config(dockertest.NewRun(b, cli)), log)
	require.NoError(b, err)
	swarmRun := dockertest.NewRun(b, cli)
	swarmCfg := config(swarmRun)
	swarmCfg.HostIP = "0.0.0.0"
	s, err := NewSwarm(cli, swarmCfg, SwarmConfig{PublishMode: PublishHost}, log)
	require.NoError(b, err)
	// Registered after NewRun's cleanup, so it runs before it: services first, which takes
	// their tasks' containers off the networks NewRun's cleanup removes.
	b.Cleanup(func() { swarmtest.RemoveLabelled(b, cli, swarmRun.Labels) })

	ctx := b.Context()
	spec := func(envID int64) Spec {
		return Spec{EnvID: envID, OrgID: 1, Name: "bench", Image: image, HostPort: dockertest.FreePort(b),
			Env: map[string]string{"CONVERGENCE_ENV_ID": strconv.FormatInt(envID, 10)}}.WithDefaults()
	}
	var onDocker, onSwarm []time.Duration
	envID := int64(0)
	for b.Loop() {
		envID++
		for _, on := range []struct {
			rt   Runtime
			took *[]time.Duration
		}{{d, &onDocker}, {s, &onSwarm}} {
			sp := spec(envID)
			*on.took = append(*on.took, timeIt(b, func() { spawnRuntime(b, ctx, on.rt, sp) }))
			_, err := on.rt.Remove(ctx, sp.EnvID, 0)
			require.NoError(b, err)
		}
	}
	report(b, "docker", onDocker)
	report(b, "swarm", onSwarm)
	b.ReportMetric(pct(onSwarm, 50).Seconds()/pct(onDocker, 50).Seconds(), "swarm/docker-p50")
}
