package runtime

import (
	"context"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/network"
	"github.com/stretchr/testify/require"

	"github.com/convergence-dev/convergence/internal/dockertest"
)

// BenchmarkSpawnToHealthy measures the time from nothing to a tenant answering /health, for
// the runtime (Ensure + WaitHealthy) beside two baselines measured in the same run: the same
// SDK calls made directly (network, create, start, poll /health) and `docker compose up -d`
// of the generated compose file. Teardown is not timed. It reports p50 and p95 per variant in
// milliseconds, the runtime's ratio to each baseline, and the memory of an idle tenant.
//
//	go test -run '^$' -bench SpawnToHealthy -benchtime 10x ./services/provisioner/runtime/
func BenchmarkSpawnToHealthy(b *testing.B) {
	cli := dockertest.Client(b)
	image := dockertest.TenantImage(b)
	run := dockertest.NewRun(b, cli)
	d, err := NewDocker(cli, DockerConfig{NamePrefix: run.Prefix, Labels: run.Labels, ReplaceGrace: time.Second},
		slog.New(slog.DiscardHandler))
	require.NoError(b, err)
	ctx := b.Context()
	spec := func(envID int64) Spec {
		return Spec{EnvID: envID, OrgID: 1, Name: "bench", Image: image, HostPort: dockertest.FreePort(b),
			Env: map[string]string{"CONVERGENCE_ENV_ID": strconv.FormatInt(envID, 10)}}.WithDefaults()
	}
	compose := dockertest.ComposeCommand(b)

	b.Run("one", func(b *testing.B) {
		var rt, direct, comp []time.Duration
		var idleMem uint64
		envID := int64(0)
		for b.Loop() {
			envID++
			s := spec(envID)
			rt = append(rt, timeIt(b, func() { spawnRuntime(b, ctx, d, s) }))
			if idleMem == 0 {
				time.Sleep(time.Second) // let it settle into idle
				st, err := d.Status(ctx, s.EnvID)
				require.NoError(b, err)
				idleMem = st.MemoryBytes
			}
			_, err := d.Remove(ctx, s.EnvID, 0)
			require.NoError(b, err)

			envID++
			s = spec(envID)
			direct = append(direct, timeIt(b, func() { spawnDirect(b, ctx, d, s) }))
			_, err = d.Remove(ctx, s.EnvID, 0)
			require.NoError(b, err)

			envID++
			s = spec(envID)
			comp = append(comp, timeIt(b, func() { spawnCompose(b, ctx, d, compose, s) }))
			_, err = d.Remove(ctx, s.EnvID, 0)
			require.NoError(b, err)
		}
		report(b, "runtime", rt)
		report(b, "direct", direct)
		report(b, "compose", comp)
		b.ReportMetric(pct(rt, 50).Seconds()/pct(direct, 50).Seconds(), "runtime/direct-p50")
		b.ReportMetric(pct(rt, 50).Seconds()/pct(comp, 50).Seconds(), "runtime/compose-p50")
		b.ReportMetric(float64(idleMem)/(1<<20), "idle-MiB")
	})

	b.Run("parallel20", func(b *testing.B) {
		const n = 20
		var rt, direct []time.Duration
		envID := int64(1000)
		for b.Loop() {
			for variant, into := range []*[]time.Duration{&rt, &direct} {
				specs := make([]Spec, n)
				for i := range specs {
					envID++
					specs[i] = spec(envID)
				}
				var mu sync.Mutex
				var wg sync.WaitGroup
				for _, s := range specs {
					wg.Go(func() {
						took := timeIt(b, func() {
							if variant == 0 {
								spawnRuntime(b, ctx, d, s)
							} else {
								spawnDirect(b, ctx, d, s)
							}
						})
						mu.Lock()
						*into = append(*into, took)
						mu.Unlock()
					})
				}
				wg.Wait()
				for _, s := range specs {
					wg.Go(func() {
						_, err := d.Remove(ctx, s.EnvID, 0)
						require.NoError(b, err)
					})
				}
				wg.Wait()
			}
		}
		report(b, "runtime", rt)
		report(b, "direct", direct)
		b.ReportMetric(pct(rt, 50).Seconds()/pct(direct, 50).Seconds(), "runtime/direct-p50")
	})
}

func timeIt(b *testing.B, f func()) time.Duration {
	b.Helper()
	start := time.Now()
	f()
	return time.Since(start)
}

// spawnRuntime spawns a tenant with rt: Ensure, then WaitHealthy for up to 30 seconds.
func spawnRuntime(b *testing.B, ctx context.Context, rt Runtime, s Spec) {
	_, err := rt.Ensure(ctx, s)
	require.NoError(b, err)
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	require.NoError(b, rt.WaitHealthy(wctx, s.EnvID, s.HostPort))
}

// spawnDirect makes the same network and container with bare SDK calls: no image check, no
// verification, no bookkeeping, and a tight health poll.
func spawnDirect(b *testing.B, ctx context.Context, d *Docker, s Spec) {
	netName := d.NetworkName(s.EnvID)
	labels := specLabels(s, s.SpecHash(), d.cfg.Labels)
	_, err := d.cli.NetworkCreate(ctx, netName, network.CreateOptions{Driver: "bridge", Labels: labels,
		IPAM: &network.IPAM{Config: []network.IPAMConfig{{Subnet: d.subnets.candidates(netName)[0].String()}}}})
	require.NoError(b, err)
	cs := d.containerSpec(s, s.SpecHash(), netName)
	created, err := d.cli.ContainerCreate(ctx, cs.config, cs.host, cs.network, nil, cs.name)
	require.NoError(b, err)
	require.NoError(b, d.cli.ContainerStart(ctx, created.ID, container.StartOptions{}))
	pollHealth(b, ctx, s.HostPort)
}

func spawnCompose(b *testing.B, ctx context.Context, d *Docker, compose []string, s Spec) {
	file, err := d.ComposeFile(s)
	require.NoError(b, err)
	path := filepath.Join(b.TempDir(), "docker-compose.yml")
	require.NoError(b, os.WriteFile(path, file, 0o600))
	dockertest.Compose(ctx, b, "-p", d.ContainerName(s.EnvID), "-f", path, "up", "-d")
	pollHealth(b, ctx, s.HostPort)
}

func pollHealth(b *testing.B, ctx context.Context, port int) {
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: time.Second}
	url := "http://127.0.0.1:" + strconv.Itoa(port) + "/health"
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		require.NoError(b, err)
		if resp, err := c.Do(req); err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	b.Fatalf("no health on port %d", port)
}

func pct(d []time.Duration, p int) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[min(len(s)-1, (len(s)*p+99)/100-1)]
}

func report(b *testing.B, name string, d []time.Duration) {
	b.ReportMetric(float64(pct(d, 50).Microseconds())/1000, name+"-p50-ms")
	b.ReportMetric(float64(pct(d, 95).Microseconds())/1000, name+"-p95-ms")
	b.Logf("%s: n=%d p50=%s p95=%s", name, len(d), pct(d, 50), pct(d, 95))
}
