package runtime

import (
	"errors"
	"strings"
	"testing"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/mount"
	"github.com/docker/go-connections/nat"
	"github.com/stretchr/testify/require"
)

func TestCPUPercent(t *testing.T) {
	t.Parallel()
	sample := func(total, system uint64, online uint32, percpu int) container.CPUStats {
		return container.CPUStats{
			CPUUsage:    container.CPUUsage{TotalUsage: total, PercpuUsage: make([]uint64, percpu)},
			SystemUsage: system,
			OnlineCPUs:  online,
		}
	}
	tests := []struct {
		name     string
		pre, cur container.CPUStats
		want     float64
	}{
		// Two cores over one second give 2e9 ns of system time; the container used 0.5e9 ns.
		{"half a core of two", sample(1e9, 10e9, 2, 0), sample(1.5e9, 12e9, 2, 0), 50},
		{"one full core", sample(0, 10e9, 2, 0), sample(1e9, 12e9, 2, 0), 100},
		{"idle", sample(1e9, 10e9, 2, 0), sample(1e9, 12e9, 2, 0), 0},
		{"online cpus missing, per-cpu list counts", sample(1e9, 10e9, 0, 4), sample(2e9, 14e9, 0, 4), 100},
		{"no previous sample (one-shot)", container.CPUStats{}, sample(1e9, 12e9, 2, 0), 0},
		{"counter went backwards", sample(2e9, 10e9, 2, 0), sample(1e9, 12e9, 2, 0), 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := cpuPercent(container.StatsResponse{PreCPUStats: tt.pre, CPUStats: tt.cur})
			require.InDelta(t, tt.want, got, 1e-9)
		})
	}
}

func TestMemoryUsage(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		m    container.MemoryStats
		want uint64
	}{
		{"cgroup v1 subtracts total_inactive_file", container.MemoryStats{Usage: 100, Stats: map[string]uint64{"total_inactive_file": 30, "inactive_file": 10}}, 70},
		{"cgroup v2 subtracts inactive_file", container.MemoryStats{Usage: 100, Stats: map[string]uint64{"inactive_file": 40}}, 60},
		{"no stats", container.MemoryStats{Usage: 100}, 100},
		{"inactive above usage", container.MemoryStats{Usage: 10, Stats: map[string]uint64{"inactive_file": 40}}, 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, tt.want, memoryUsage(tt.m))
		})
	}
}

// TestVerifyHardening_EngineDroppedSetting_Reported feeds verifyHardening inspect results
// as an engine would return them when the kernel or a daemon setting defeats one setting.
func TestVerifyHardening_EngineDroppedSetting_Reported(t *testing.T) {
	t.Parallel()
	d := &Docker{cfg: DockerConfig{}.withDefaults()}
	spec := Spec{EnvID: 1, OrgID: 1, Name: "a", Image: "img", HostPort: 3001}.WithDefaults()
	want := d.containerSpec(spec, spec.SpecHash(), d.NetworkName(1))
	applied := func() container.InspectResponse {
		host := *want.host
		pids := *host.PidsLimit
		host.PidsLimit = &pids
		cfg := *want.config
		return container.InspectResponse{
			ContainerJSONBase: &container.ContainerJSONBase{HostConfig: &host},
			Config:            &cfg,
		}
	}
	require.Empty(t, verifyHardening(want, applied()), "everything applied")

	tests := []struct {
		name    string
		breakIt func(*container.InspectResponse)
		want    string
	}{
		{"no pids cgroup", func(c *container.InspectResponse) { c.HostConfig.PidsLimit = nil }, "pid limit is unlimited"},
		{"no swap accounting", func(c *container.InspectResponse) { c.HostConfig.MemorySwap = -1 }, "memory+swap limit is -1"},
		{"no cpu cfs", func(c *container.InspectResponse) { c.HostConfig.NanoCPUs = 0 }, "cpu limit is 0"},
		{"memory dropped", func(c *container.InspectResponse) { c.HostConfig.Memory = 0 }, "memory limit is 0"},
		{"root user", func(c *container.InspectResponse) { c.Config.User = "" }, `user is "" (root)`},
		{"writable root", func(c *container.InspectResponse) { c.HostConfig.ReadonlyRootfs = false }, "root filesystem is writable"},
		{"caps kept", func(c *container.InspectResponse) { c.HostConfig.CapDrop = nil }, "want ALL"},
		{"cap added", func(c *container.InspectResponse) { c.HostConfig.CapAdd = []string{"NET_ADMIN"} }, "capabilities added"},
		{"privileges", func(c *container.InspectResponse) { c.HostConfig.SecurityOpt = nil }, "no-new-privileges"},
		{"privileged", func(c *container.InspectResponse) { c.HostConfig.Privileged = true }, "privileged"},
		{"docker socket", func(c *container.InspectResponse) {
			c.Mounts = []container.MountPoint{{Type: mount.TypeBind, Source: "/var/run/docker.sock", Destination: "/var/run/docker.sock"}}
		}, "host path mounted"},
		{"published everywhere", func(c *container.InspectResponse) {
			c.HostConfig.PortBindings = nat.PortMap{"8080/tcp": {{HostIP: "0.0.0.0", HostPort: "3001"}}}
		}, "port bindings"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := applied()
			tt.breakIt(&c)
			problems := verifyHardening(want, c)
			require.Len(t, problems, 1, "%v", problems)
			require.Contains(t, problems[0], tt.want)
		})
	}
}

func TestSubnetPool(t *testing.T) {
	t.Parallel()
	p, ok, err := parseSubnetPool("10.213.0.0/16", 28)
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, 4096, p.slots())
	require.Equal(t, "10.213.0.0/28", p.subnet(0).String())
	require.Equal(t, "10.213.0.16/28", p.subnet(1).String())
	require.Equal(t, "10.213.255.240/28", p.subnet(4095).String())
	require.Equal(t, "10.213.0.0/28", p.subnet(4096).String(), "wraps around")

	c := p.candidates("convergence-env-1-net")
	require.Len(t, c, maxSubnetTries)
	require.Equal(t, c, p.candidates("convergence-env-1-net"), "deterministic")
	require.NotEqual(t, c[0], p.candidates("convergence-env-2-net")[0], "tenants spread over the pool")
	seen := map[string]bool{}
	for _, s := range c {
		require.False(t, seen[s.String()], "candidate %s twice", s)
		seen[s.String()] = true
	}

	small, _, err := parseSubnetPool("10.214.0.0/27", 28)
	require.NoError(t, err)
	require.Len(t, small.candidates("x"), 2)

	_, ok, err = parseSubnetPool(EngineSubnets, 0)
	require.NoError(t, err)
	require.False(t, ok)
	for _, bad := range []struct {
		pool string
		bits int
	}{{"10.213.0.1/16", 28}, {"fd00::/64", 80}, {"nonsense", 28}, {"10.213.0.0/16", 8}, {"10.213.0.0/16", 30}} {
		_, _, err := parseSubnetPool(bad.pool, bad.bits)
		require.Error(t, err, "%s /%d", bad.pool, bad.bits)
	}
}

func TestToEvent(t *testing.T) {
	t.Parallel()
	msg := func(action string, attrs map[string]string) events.Message {
		attrs["name"] = "convergence-env-9"
		attrs[LabelEnvID] = "9"
		return events.Message{Type: events.ContainerEventType, Action: events.Action(action), Actor: events.Actor{ID: "abc", Attributes: attrs}, TimeNano: 1e18}
	}
	ev, ok := toEvent(msg("die", map[string]string{"exitCode": "137"}))
	require.True(t, ok)
	require.Equal(t, Event{Kind: EventDie, EnvID: 9, ContainerID: "abc", ContainerName: "convergence-env-9", ExitCode: 137, Time: ev.Time}, ev)
	require.Equal(t, int64(1e18), ev.Time.UnixNano())

	ev, ok = toEvent(msg("health_status: unhealthy", map[string]string{}))
	require.True(t, ok)
	require.Equal(t, EventHealth, ev.Kind)
	require.Equal(t, HealthUnhealthy, ev.Health)

	_, ok = toEvent(msg("exec_start: sh", map[string]string{}))
	require.False(t, ok)
}

func TestExcerpt_LongOutput_KeepsHeadAndTail(t *testing.T) {
	t.Parallel()
	var lines []string
	for i := range 30 {
		lines = append(lines, strings.Repeat("x", i))
	}
	got := strings.Split(excerpt(strings.Join(lines, "\n")+"\n", 2, 3), "\n")
	require.Equal(t, []string{"", "x", "[... 25 lines ...]", strings.Repeat("x", 27), strings.Repeat("x", 28), strings.Repeat("x", 29)}, got)
	require.Equal(t, "a\nb", excerpt("a\nb\n", 2, 3))
}

func TestExitError_Message_SaysWhy(t *testing.T) {
	t.Parallel()
	err := error(&ExitError{Container: "c", ExitCode: 137, OOMKilled: true, RestartCount: 3, LastLogs: "boom\n"})
	require.Equal(t, "container c exited with code 137 (killed: out of memory) after 3 restarts; last log lines:\nboom", err.Error())
	e, ok := errors.AsType[*ExitError](err)
	require.True(t, ok)
	require.True(t, e.OOMKilled)
}

func TestIsPortInUse(t *testing.T) {
	t.Parallel()
	require.True(t, isPortInUse(errors.New("Error starting userland proxy: listen tcp4 127.0.0.1:3001: bind: address already in use")))
	require.True(t, isPortInUse(errors.New("Bind for 127.0.0.1:3001 failed: port is already allocated")))
	require.False(t, isPortInUse(errors.New("no such image")))
	require.False(t, isPortInUse(nil))
}
