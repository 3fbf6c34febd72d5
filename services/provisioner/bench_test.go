package provisioner_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/go-connections/nat"
	"github.com/stretchr/testify/require"

	"github.com/convergence-dev/convergence/internal/dockertest"
	"github.com/convergence-dev/convergence/services/provisioner"
	"github.com/convergence-dev/convergence/services/provisioner/runtime"
)

// BenchmarkSpawnToHealthy measures spawn-to-healthy through the whole platform path, for one
// tenant and for 20 at once, beside two baselines measured in the same run:
//
//   - service: POST /api/v1/tenant/spawn, answered once the tenant runs: the API's
//     transaction, the outbox relay, JetStream, the provisioner's consumer, port probe,
//     compose file, Ensure (image check, network, create, inspect and hardening check,
//     start), the wait for GET /health, the database update and its fact back to the API;
//   - direct: the same container (its config copied from one the service made) with bare SDK
//     calls: network create, container create, start, then a tight poll of GET /health;
//   - compose: `docker compose up -d` of the generated compose file, then the same poll.
//
// Teardown is not timed. It prints a table with p50 and p95 per variant, the ratios, and the
// resident memory of an idle tenant. Run it with `make bench`, or:
//
//	go test -run '^$' -bench SpawnToHealthy -benchtime 5x ./services/provisioner/
func BenchmarkSpawnToHealthy(b *testing.B) {
	h := newHarness(b)
	// The baselines publish on ports of their own; ephemeral ones could be taken meanwhile.
	h.basePort, _ = dockertest.PortRange(b, 24)
	compose := dockertest.ComposeCommand(b)
	ctx := b.Context()

	// One tenant made by the service is the template of the direct baseline.
	templateID := envIDOf(h.spawn("template"))
	tmpl := h.inspect(templateID)
	time.Sleep(2 * time.Second) // let it settle into idle
	idle := h.idleMemory(templateID)

	var seq int
	next := func() int { seq++; return seq }
	var one, oneDirect, oneCompose, par, parDirect []time.Duration

	b.Run("one", func(b *testing.B) {
		for b.Loop() {
			one = append(one, h.timeServiceSpawns(b, 1, next)...)
			oneDirect = append(oneDirect, h.timeDirectSpawns(b, tmpl, 1, next)...)
			oneCompose = append(oneCompose, h.timeComposeSpawn(b, ctx, compose, next()))
		}
		b.ReportMetric(ms(pct(one, 50)), "service-p50-ms")
		b.ReportMetric(ratio(one, oneDirect), "service/direct-p50")
		b.ReportMetric(ratio(one, oneCompose), "service/compose-p50")
	})
	b.Run("parallel20", func(b *testing.B) {
		for b.Loop() {
			par = append(par, h.timeServiceSpawns(b, 20, next)...)
			parDirect = append(parDirect, h.timeDirectSpawns(b, tmpl, 20, next)...)
		}
		b.ReportMetric(ms(pct(par, 50)), "service-p50-ms")
		b.ReportMetric(ratio(par, parDirect), "service/direct-p50")
	})

	var t strings.Builder
	fmt.Fprintf(&t, "\nspawn to healthy              n     p50 ms    p95 ms\n")
	row := func(name string, d []time.Duration) {
		if len(d) > 0 {
			fmt.Fprintf(&t, "%-24s %6d %10.1f %9.1f\n", name, len(d), ms(pct(d, 50)), ms(pct(d, 95)))
		}
	}
	row("one: service", one)
	row("one: direct SDK", oneDirect)
	row("one: docker compose up", oneCompose)
	row("20 parallel: service", par)
	row("20 parallel: direct SDK", parDirect)
	if len(one) > 0 {
		fmt.Fprintf(&t, "p50 ratios, one: service/direct %.2f, service/compose %.2f\n", ratio(one, oneDirect), ratio(one, oneCompose))
	}
	if len(par) > 0 {
		fmt.Fprintf(&t, "p50 ratio, 20 parallel: service/direct %.2f\n", ratio(par, parDirect))
	}
	fmt.Fprintf(&t, "idle tenant: %s\n", idle)
	// Printed, not logged: a parent benchmark's log is dropped when it passes.
	fmt.Print(t.String())
}

// timeServiceSpawns spawns n tenants at once through the API, timing each to its answer
// (running), then destroys them untimed.
func (h *harness) timeServiceSpawns(b *testing.B, n int, next func() int) []time.Duration {
	names := make([]string, n)
	for i := range names {
		names[i] = "bench-" + strconv.Itoa(next())
	}
	took := make([]time.Duration, n)
	ids := make([]int64, n)
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			start := time.Now()
			code, body, err := h.try(http.MethodPost, "/api/v1/tenant/spawn", map[string]any{"name": names[i]})
			took[i] = time.Since(start)
			if err == nil && code != http.StatusCreated {
				err = fmt.Errorf("spawn %s: %d %v", names[i], code, body)
			}
			if errs[i] = err; err == nil {
				ids[i] = envIDOf(body["tenant"].(map[string]any))
			}
		})
	}
	wg.Wait()
	require.NoError(b, errors.Join(errs...))
	for i, id := range ids {
		wg.Go(func() {
			code, body, err := h.try(http.MethodDelete, tenantPath(id, ""), nil)
			if err == nil && code != http.StatusOK {
				err = fmt.Errorf("destroy %d: %d %v", id, code, body)
			}
			errs[i] = err
		})
	}
	wg.Wait()
	require.NoError(b, errors.Join(errs...))
	return took
}

// timeDirectSpawns makes n copies of the template container at once with bare SDK calls.
func (h *harness) timeDirectSpawns(b *testing.B, tmpl container.InspectResponse, n int, next func() int) []time.Duration {
	ctx := b.Context()
	took := make([]time.Duration, n)
	names := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		k := next()
		names[i] = fmt.Sprintf("%s-direct-%d", h.run.Prefix, k)
		port := h.basePort + i
		wg.Go(func() {
			start := time.Now()
			errs[i] = h.spawnDirect(ctx, tmpl, names[i], k, port)
			took[i] = time.Since(start)
		})
	}
	wg.Wait()
	require.NoError(b, errors.Join(errs...))
	for i, name := range names {
		wg.Go(func() {
			errs[i] = errors.Join(
				h.cli.ContainerRemove(ctx, name, container.RemoveOptions{Force: true}),
				h.cli.NetworkRemove(ctx, name+"-net"))
		})
	}
	wg.Wait()
	require.NoError(b, errors.Join(errs...))
	return took
}

// spawnDirect makes the network and container and waits for GET /health, with bare SDK calls.
func (h *harness) spawnDirect(ctx context.Context, tmpl container.InspectResponse, name string, k, port int) error {
	netName := name + "-net"
	// A subnet of its own, away from the runtime's pool, as the runtime would pick one.
	subnet := fmt.Sprintf("10.214.%d.%d/28", (k/16)%256, (k%16)*16)
	if _, err := h.cli.NetworkCreate(ctx, netName, network.CreateOptions{Driver: "bridge", Labels: h.run.Labels,
		IPAM: &network.IPAM{Config: []network.IPAMConfig{{Subnet: subnet}}}}); err != nil {
		return err
	}
	cfg := *tmpl.Config
	cfg.Labels = h.run.Labels
	host := *tmpl.HostConfig
	host.NetworkMode = container.NetworkMode(netName)
	host.PortBindings = nat.PortMap{"8080/tcp": {{HostIP: "127.0.0.1", HostPort: strconv.Itoa(port)}}}
	created, err := h.cli.ContainerCreate(ctx, &cfg, &host,
		&network.NetworkingConfig{EndpointsConfig: map[string]*network.EndpointSettings{netName: {}}}, nil, name)
	if err != nil {
		return err
	}
	if err := h.cli.ContainerStart(ctx, created.ID, container.StartOptions{}); err != nil {
		return err
	}
	return waitHealth(ctx, port)
}

// timeComposeSpawn runs the generated compose file of a tenant the database does not know
// (so only its container is measured) with `docker compose up -d`, then removes it.
func (h *harness) timeComposeSpawn(b *testing.B, ctx context.Context, compose []string, k int) time.Duration {
	envID := int64(100_000 + k)
	port := h.basePort
	spec := runtime.Spec{EnvID: envID, OrgID: 1, Name: "bench-compose", Image: h.image, HostPort: port,
		Env: map[string]string{"CONVERGENCE_ENV_ID": strconv.FormatInt(envID, 10)}}
	file, err := provisioner.DockerRuntime(h.svc).ComposeFile(spec)
	require.NoError(b, err)
	path := filepath.Join(b.TempDir(), "docker-compose.yml")
	require.NoError(b, os.WriteFile(path, file, 0o600))
	start := time.Now()
	dockertest.Compose(ctx, b, "-p", h.svc.Runtime().ContainerName(envID), "-f", path, "up", "-d")
	require.NoError(b, waitHealth(ctx, port))
	took := time.Since(start)
	_, err = h.svc.Runtime().Remove(ctx, envID, 0)
	require.NoError(b, err)
	return took
}

// waitHealth polls GET /health on port every 5 ms until it answers 200.
func waitHealth(ctx context.Context, port int) error {
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: time.Second}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, healthURL(port), nil)
		if err != nil {
			return err
		}
		if resp, err := c.Do(req); err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	return fmt.Errorf("no health on port %d within 30s", port)
}

// idleMemory is what an idle tenant holds: the app process's resident set, and the cgroup's
// memory without page cache (what its limit weighs).
type idleMemory struct {
	rssKiB    int64 // 0 when the process is not visible from here
	cgroupMiB float64
}

func (m idleMemory) String() string {
	rss := "process not visible from here"
	if m.rssKiB > 0 {
		rss = fmt.Sprintf("%.1f MiB", float64(m.rssKiB)/1024)
	}
	return fmt.Sprintf("RSS %s (VmRSS of the app), cgroup memory %.1f MiB", rss, m.cgroupMiB)
}

func (h *harness) idleMemory(envID int64) idleMemory {
	var m idleMemory
	st, err := h.svc.Runtime().Status(h.t.Context(), envID)
	require.NoError(h.t, err)
	m.cgroupMiB = float64(st.MemoryBytes) / (1 << 20)
	c := h.inspect(envID)
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", c.State.Pid))
	if err != nil {
		return m
	}
	defer func() { _ = f.Close() }()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			m.rssKiB, _ = strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		}
	}
	return m
}

func pct(d []time.Duration, p int) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[min(len(s)-1, (len(s)*p+99)/100-1)]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func ratio(a, b []time.Duration) float64 {
	if len(b) == 0 || pct(b, 50) == 0 {
		return 0
	}
	return pct(a, 50).Seconds() / pct(b, 50).Seconds()
}
