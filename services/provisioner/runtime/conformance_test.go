package runtime_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/swarm"
	"github.com/stretchr/testify/require"

	"github.com/convergence-dev/convergence/internal/dockertest"
	"github.com/convergence-dev/convergence/services/provisioner/runtime"
)

// The runtime conformance suite: what the provisioner relies on, run against every runtime
// (eachRuntime). What only one runtime has is tested in docker_test.go and swarm_test.go.

func TestEnsure_SameSpecTwice_IsNoOp(t *testing.T) {
	t.Parallel()
	eachRuntime(t, func(t *testing.T, h *harness) {
		ctx := t.Context()
		spec := h.spec(102)
		first := h.start(ctx, spec)

		again, err := h.rt.Ensure(ctx, spec)
		require.NoError(t, err)
		require.False(t, again.Created)
		require.Equal(t, first.ContainerID, again.ContainerID)
		require.Equal(t, first.NetworkID, again.NetworkID)
		require.Equal(t, spec.HostPort, again.HostPort)
	})
}

func TestEnsure_StoppedTenantSameSpec_StartsIt(t *testing.T) {
	t.Parallel()
	eachRuntime(t, func(t *testing.T, h *harness) {
		ctx := t.Context()
		spec := h.spec(103)
		first := h.start(ctx, spec)
		h.stopContainer(ctx, spec.EnvID)

		again, err := h.rt.Ensure(ctx, spec)
		require.NoError(t, err)
		require.False(t, again.Created)
		require.Equal(t, first.ContainerID, again.ContainerID)
		wctx, cancel := context.WithTimeout(ctx, tenantTimeout)
		defer cancel()
		require.NoError(t, h.rt.WaitHealthy(wctx, spec.EnvID, spec.HostPort))
	})
}

func TestEnsure_ChangedSpec_ReplacesTenantAndNetwork(t *testing.T) {
	t.Parallel()
	eachRuntime(t, func(t *testing.T, h *harness) {
		ctx := t.Context()
		spec := h.spec(104)
		first := h.start(ctx, spec)

		spec.Generation = 2
		spec.Limits.MemoryBytes = 96 << 20
		second := h.start(ctx, spec)
		require.True(t, second.Created)
		require.NotEqual(t, first.ContainerID, second.ContainerID)
		require.NotEqual(t, first.SpecHash, second.SpecHash)

		st, err := h.rt.Status(ctx, spec.EnvID)
		require.NoError(t, err)
		require.Equal(t, int64(2), st.Generation)
		require.Equal(t, second.SpecHash, st.SpecHash)
		require.Equal(t, uint64(96<<20), st.MemoryLimitBytes, "the kernel enforces the new limit")
		n, err := h.cli.NetworkInspect(ctx, second.NetworkName, network.InspectOptions{})
		require.NoError(t, err)
		require.Equal(t, second.SpecHash, n.Labels[runtime.LabelSpecHash])
	})
}

func TestEnsure_MissingImage_ReadableErrorAndNothingLeft(t *testing.T) {
	t.Parallel()
	eachRuntime(t, func(t *testing.T, h *harness) {
		ctx := t.Context()
		spec := h.spec(105)
		spec.Image = "convergence/does-not-exist:" + h.run.ID

		_, err := h.rt.Ensure(ctx, spec)
		require.ErrorIs(t, err, runtime.ErrImageNotFound)
		require.ErrorContains(t, err, spec.Image)
		require.ErrorContains(t, err, "never pulled")
		h.requireGone(ctx, 105)
		objs, err := h.rt.List(ctx)
		require.NoError(t, err)
		require.Empty(t, objs)
	})
}

func TestEnsure_HostPortTaken_ErrPortUnavailableAndNothingLeft(t *testing.T) {
	t.Parallel()
	eachRuntime(t, func(t *testing.T, h *harness) {
		ctx := t.Context()
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		t.Cleanup(func() { _ = ln.Close() })
		spec := h.spec(106)
		spec.HostPort = ln.Addr().(*net.TCPAddr).Port

		_, err = h.rt.Ensure(ctx, spec)
		require.ErrorIs(t, err, runtime.ErrPortUnavailable)
		h.requireGone(ctx, 106)
	})
}

func TestEnsure_CancelledMidway_LeavesNothingBehind(t *testing.T) {
	t.Parallel()
	eachRuntime(t, func(t *testing.T, h *harness) {
		// Cut Ensure off at points spread over its engine calls. Whatever the engine finished
		// after the caller gave up must not stay behind.
		for i, after := range []time.Duration{0, 2 * time.Millisecond, 10 * time.Millisecond, 30 * time.Millisecond, 60 * time.Millisecond} {
			spec := h.spec(int64(130 + i))
			ctx, cancel := context.WithTimeout(t.Context(), after)
			_, err := h.rt.Ensure(ctx, spec)
			cancel()
			if err == nil {
				// Fast enough to finish: remove it the normal way.
				_, err := h.rt.Remove(t.Context(), spec.EnvID, 0)
				require.NoError(t, err)
			} else {
				require.ErrorIs(t, err, context.DeadlineExceeded, "cut off after %s", after)
			}
			h.requireGone(t.Context(), spec.EnvID)
		}
		// The engine may finish a create after its caller gave up; give it the time to.
		time.Sleep(time.Second)
		for i := range 5 {
			h.requireGone(t.Context(), int64(130+i))
		}
	})
}

func TestEnsure_InvalidSpec_RejectedBeforeTouchingTheEngine(t *testing.T) {
	t.Parallel()
	eachRuntime(t, func(t *testing.T, h *harness) {
		spec := h.spec(107)
		spec.Name = "Not_A_DNS_Label"
		spec.Env["PORT"] = "9090"

		_, err := h.rt.Ensure(t.Context(), spec)
		require.ErrorIs(t, err, runtime.ErrInvalidSpec)
		require.ErrorContains(t, err, "DNS label")
		require.ErrorContains(t, err, "PORT")
		h.requireGone(t.Context(), 107)
	})
}

func TestWaitHealthy_AppCrashes_FailsFastWithExitCodeAndLogs(t *testing.T) {
	t.Parallel()
	eachRuntime(t, func(t *testing.T, h *harness) {
		ctx := t.Context()
		spec := h.spec(108)
		// One PID leaves the Go runtime no thread to start: it aborts at once with exit code 2.
		spec.Limits.PIDs = 1
		_, err := h.rt.Ensure(ctx, spec)
		require.NoError(t, err)

		wctx, cancel := context.WithTimeout(ctx, tenantTimeout)
		defer cancel()
		began := time.Now()
		err = h.rt.WaitHealthy(wctx, spec.EnvID, spec.HostPort)
		exit, ok := errors.AsType[*runtime.ExitError](err)
		require.True(t, ok, "want an ExitError, got %v", err)
		require.Less(t, time.Since(began), 10*time.Second, "must fail fast, not wait for the deadline")
		require.Equal(t, 2, exit.ExitCode)
		require.False(t, exit.OOMKilled)
		require.Contains(t, exit.LastLogs, "failed to create new OS thread", "the first lines say why")
		require.ErrorContains(t, err, "exited with code 2")
	})
}

func TestWaitHealthy_NothingListens_ReturnsAtDeadlineWithLastProbe(t *testing.T) {
	t.Parallel()
	eachRuntime(t, func(t *testing.T, h *harness) {
		ctx := t.Context()
		spec := h.spec(109)
		h.start(ctx, spec)

		wctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		// The tenant is healthy on its own port; nothing listens on this one.
		err := h.rt.WaitHealthy(wctx, spec.EnvID, dockertest.FreePort(t))
		require.ErrorIs(t, err, context.DeadlineExceeded)
		require.ErrorContains(t, err, "connection refused")
	})
}

func TestStatus_RunningTenant_ReportsStateAndUsage(t *testing.T) {
	t.Parallel()
	eachRuntime(t, func(t *testing.T, h *harness) {
		ctx := t.Context()
		spec := h.spec(110)
		inst := h.start(ctx, spec)
		// Give the engine a moment so the tenant has an uptime and two stats samples.
		time.Sleep(1100 * time.Millisecond)

		st, err := h.rt.Status(ctx, spec.EnvID)
		require.NoError(t, err)
		require.Equal(t, runtime.StateRunning, st.State)
		require.Equal(t, h.rt.ContainerName(spec.EnvID), st.ContainerName)
		require.NotEmpty(t, st.ContainerID)
		if h.kind == kindDocker {
			require.Equal(t, inst.ContainerID, st.ContainerID)
		} else {
			require.NotEmpty(t, st.Node, "the node running the task")
		}
		require.Equal(t, spec.HostPort, st.HostPort)
		require.Equal(t, spec.Image, st.Image)
		require.Equal(t, int64(1), st.Generation)
		require.Equal(t, spec.SpecHash(), st.SpecHash)
		require.Contains(t, []runtime.Health{runtime.HealthStarting, runtime.HealthHealthy}, st.Health)
		require.Zero(t, st.RestartCount)
		require.WithinDuration(t, time.Now(), st.StartedAt, time.Minute)
		require.GreaterOrEqual(t, st.Uptime, time.Second)
		require.GreaterOrEqual(t, st.CPUPercent, 0.0)
		require.Less(t, st.CPUPercent, 100.0, "an idle tenant under a quarter-core quota")
		require.InDelta(t, 0.25, st.CPULimit, 1e-9)
		require.Positive(t, st.MemoryBytes)
		require.Less(t, st.MemoryBytes, uint64(64<<20))
		require.Equal(t, uint64(64<<20), st.MemoryLimitBytes, "the kernel enforces the memory limit")
		require.Positive(t, st.PIDs)
	})
}

func TestStatus_UnknownEnv_Missing(t *testing.T) {
	t.Parallel()
	eachRuntime(t, func(t *testing.T, h *harness) {
		st, err := h.rt.Status(t.Context(), 999)
		require.NoError(t, err)
		require.Equal(t, runtime.StateMissing, st.State)
	})
}

func TestStatus_AfterStop_ExitedWithoutUsage(t *testing.T) {
	t.Parallel()
	eachRuntime(t, func(t *testing.T, h *harness) {
		ctx := t.Context()
		spec := h.spec(111)
		h.start(ctx, spec)
		h.stopContainer(ctx, spec.EnvID)

		st, err := h.rt.Status(ctx, spec.EnvID)
		require.NoError(t, err)
		require.Equal(t, runtime.StateExited, st.State)
		require.Zero(t, st.ExitCode, "the template stops cleanly on SIGTERM")
		require.Zero(t, st.Uptime)
		require.Zero(t, st.MemoryBytes)
	})
}

func TestInspect_RunningTenant_StateWithoutUsage_WithoutWaitingForASample(t *testing.T) {
	t.Parallel()
	eachRuntime(t, func(t *testing.T, h *harness) {
		ctx := t.Context()
		spec := h.spec(114)
		h.start(ctx, spec)

		st, err := h.rt.Inspect(ctx, spec.EnvID)
		require.NoError(t, err)
		require.Equal(t, runtime.StateRunning, st.State)
		require.NotEmpty(t, st.ContainerID)
		require.Equal(t, spec.HostPort, st.HostPort)
		require.WithinDuration(t, time.Now(), st.StartedAt, time.Minute)
		require.Zero(t, st.MemoryBytes)
		require.Zero(t, st.CPUPercent)

		st, err = h.rt.Inspect(ctx, 999)
		require.NoError(t, err)
		require.Equal(t, runtime.StateMissing, st.State)
	})
}

func TestProbe_HealthyTenant_Nil_NothingListening_SaysWhatItSaw(t *testing.T) {
	t.Parallel()
	eachRuntime(t, func(t *testing.T, h *harness) {
		ctx := t.Context()
		spec := h.spec(115)
		h.start(ctx, spec)
		require.NoError(t, h.rt.Probe(ctx, spec.HostPort))
		err := h.rt.Probe(ctx, dockertest.FreePort(t))
		require.ErrorContains(t, err, "/health")
		require.ErrorContains(t, err, "connection refused")
	})
}

func TestLogs_RunningTenant_ReturnsDemultiplexedText(t *testing.T) {
	t.Parallel()
	eachRuntime(t, func(t *testing.T, h *harness) {
		ctx := t.Context()
		spec := h.spec(112)
		h.start(ctx, spec)

		// The engine writes a container's output to its log file asynchronously, so the line
		// the app wrote before it answered /health may land a moment later.
		var b []byte
		require.Eventually(t, func() bool {
			r, err := h.rt.Logs(ctx, spec.EnvID, runtime.LogOptions{Tail: 10})
			require.NoError(t, err)
			b, err = io.ReadAll(r)
			require.NoError(t, err)
			require.NoError(t, r.Close())
			return len(b) > 0
		}, 5*time.Second, 50*time.Millisecond)
		// Without demultiplexing each line would start with an 8-byte frame header.
		require.True(t, strings.HasPrefix(string(b), `{"time":`), "got %q", b)
		require.Contains(t, string(b), `"msg":"tenant listening"`)
		require.Contains(t, string(b), `"envId":"112"`)
		require.NotContains(t, string(b), "sk_tenant_", "the template never logs its key")

		r, err := h.rt.Logs(ctx, spec.EnvID, runtime.LogOptions{Since: time.Now().Add(time.Hour)})
		require.NoError(t, err)
		b, err = io.ReadAll(r)
		require.NoError(t, err)
		require.NoError(t, r.Close())
		require.Empty(t, b, "no line is newer than an hour from now")
	})
}

func TestLogs_Follow_StreamsUntilClosed(t *testing.T) {
	t.Parallel()
	eachRuntime(t, func(t *testing.T, h *harness) {
		ctx := t.Context()
		spec := h.spec(113)
		h.start(ctx, spec)

		r, err := h.rt.Logs(ctx, spec.EnvID, runtime.LogOptions{Follow: true, Timestamps: true})
		require.NoError(t, err)
		line, err := bufio.NewReader(r).ReadString('\n')
		require.NoError(t, err)
		require.Contains(t, line, "tenant listening")
		_, err = time.Parse(time.RFC3339Nano, strings.Fields(line)[0])
		require.NoError(t, err, "timestamps requested")

		closed := make(chan error, 1)
		go func() { closed <- r.Close() }()
		select {
		case err := <-closed:
			require.NoError(t, err)
		case <-time.After(5 * time.Second):
			t.Fatal("closing a following log reader must not block")
		}
	})
}

func TestLogs_UnknownEnv_ErrNotFound(t *testing.T) {
	t.Parallel()
	eachRuntime(t, func(t *testing.T, h *harness) {
		_, err := h.rt.Logs(t.Context(), 998, runtime.LogOptions{})
		require.ErrorIs(t, err, runtime.ErrNotFound)
	})
}

func TestRemove_RunningTenant_LeavesNothingAndReturnsLastLogs(t *testing.T) {
	t.Parallel()
	eachRuntime(t, func(t *testing.T, h *harness) {
		ctx := t.Context()
		spec := h.spec(116)
		spec.Secrets = map[string]string{"api-key": "sk_tenant_remove"}
		inst := h.start(ctx, spec)

		rm, err := h.rt.Remove(ctx, spec.EnvID, 5*time.Second)
		require.NoError(t, err)
		require.True(t, rm.Existed)
		require.Equal(t, inst.ContainerID, rm.ContainerID)
		require.Zero(t, rm.ExitCode, "SIGTERM within the grace period is a clean exit")
		require.Contains(t, string(rm.LastLogs), "tenant listening")
		require.Contains(t, string(rm.LastLogs), "tenant stopped", "logs are read after the stop")
		h.requireGone(ctx, spec.EnvID)
		objs, err := h.rt.List(ctx)
		require.NoError(t, err)
		require.Empty(t, objs, "no volume or secret is left either")

		again, err := h.rt.Remove(ctx, spec.EnvID, 5*time.Second)
		require.NoError(t, err, "removing twice is fine")
		require.False(t, again.Existed)
	})
}

func TestRemove_UnmanagedObjectWithTenantName_Refused(t *testing.T) {
	t.Parallel()
	eachRuntime(t, func(t *testing.T, h *harness) {
		ctx := t.Context()
		// Someone else's container or service that happens to carry the tenant's name but not
		// our labels (it carries the run label only, so the test cleanup still finds it).
		name := h.rt.ContainerName(117)
		exists := func() error {
			_, err := h.cli.ContainerInspect(ctx, name)
			return err
		}
		if h.kind == kindSwarm {
			img, err := h.cli.ImageInspect(ctx, h.image)
			require.NoError(t, err)
			_, err = h.cli.ServiceCreate(ctx, swarm.ServiceSpec{
				Annotations:  swarm.Annotations{Name: name, Labels: h.run.Labels},
				TaskTemplate: swarm.TaskSpec{ContainerSpec: &swarm.ContainerSpec{Image: img.ID, Labels: h.run.Labels}},
			}, swarm.ServiceCreateOptions{})
			require.NoError(t, err)
			exists = func() error {
				_, _, err := h.cli.ServiceInspectWithRaw(ctx, name, swarm.ServiceInspectOptions{})
				return err
			}
		} else {
			_, err := h.cli.ContainerCreate(ctx, &container.Config{Image: h.image, Labels: h.run.Labels}, nil, nil, nil, name)
			require.NoError(t, err)
		}

		_, err := h.rt.Remove(ctx, 117, time.Second)
		require.ErrorIs(t, err, runtime.ErrNotManaged)
		_, err = h.rt.Ensure(ctx, h.spec(117))
		require.ErrorIs(t, err, runtime.ErrNotManaged)
		require.NoError(t, exists(), "an unmanaged object is never touched")
	})
}

func TestList_ManagedTenants_WorkloadsAndNetworksWithLabels(t *testing.T) {
	t.Parallel()
	eachRuntime(t, func(t *testing.T, h *harness) {
		ctx := t.Context()
		before := time.Now().Add(-time.Second).Truncate(time.Second)
		a, b := h.spec(118), h.spec(119)
		for _, s := range []runtime.Spec{a, b} {
			_, err := h.rt.Ensure(ctx, s)
			require.NoError(t, err)
		}

		objs, err := h.rt.List(ctx)
		require.NoError(t, err)
		require.Len(t, objs, 4)
		var kinds []string
		for _, o := range objs {
			kinds = append(kinds, string(o.Kind)+":"+strconv.FormatInt(o.EnvID, 10))
			require.Equal(t, int64(7), o.OrgID)
			require.Equal(t, int64(1), o.Generation)
			require.NotEmpty(t, o.SpecHash)
			require.Equal(t, h.run.ID, o.Labels["convergence.test.run"])
			require.False(t, o.Created.Before(before), "created %s", o.Created)
			require.WithinDuration(t, time.Now(), o.Created, time.Minute)
			require.True(t, h.rt.Owns(o), "%s %s is the tenant's", o.Kind, o.Name)
		}
		workload := "container"
		if h.kind == kindSwarm {
			workload = "service"
		}
		require.Equal(t, []string{workload + ":118", workload + ":119", "network:118", "network:119"}, kinds)
		if h.kind == kindDocker {
			require.True(t, slices.ContainsFunc(objs, func(o runtime.Object) bool {
				return o.Kind == runtime.KindContainer && o.State == runtime.StateRunning
			}))
		}
	})
}

func TestEvents_TenantStartsAndIsRemoved_DeliversStartDieDestroy(t *testing.T) {
	t.Parallel()
	eachRuntime(t, func(t *testing.T, h *harness) {
		ctx, cancel := context.WithCancel(t.Context())
		events, errs := h.rt.Events(ctx)
		spec := h.spec(120)
		h.start(ctx, spec)
		_, err := h.rt.Remove(ctx, spec.EnvID, 5*time.Second)
		require.NoError(t, err)

		var kinds []runtime.EventKind
		deadline := time.After(20 * time.Second)
		for !slices.Contains(kinds, runtime.EventDestroy) {
			select {
			case ev := <-events:
				require.Equal(t, int64(120), ev.EnvID)
				require.Equal(t, h.rt.ContainerName(120), ev.ContainerName)
				if ev.Kind == runtime.EventDie {
					require.Zero(t, ev.ExitCode)
				}
				kinds = append(kinds, ev.Kind)
			case err := <-errs:
				t.Fatalf("event stream failed: %v", err)
			case <-deadline:
				t.Fatalf("no destroy event; saw %v", kinds)
			}
		}
		require.Equal(t, runtime.EventStart, kinds[0])
		require.Contains(t, kinds, runtime.EventDie)

		cancel()
		for range events {
		}
		_, open := <-errs
		require.False(t, open, "a cancelled stream closes without an error")
	})
}
