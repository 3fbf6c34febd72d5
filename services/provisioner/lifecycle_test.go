package provisioner_test

import (
	"context"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/stretchr/testify/require"

	"github.com/convergence-dev/convergence/internal/natsauth"
	"github.com/convergence-dev/convergence/pkg/events"
	"github.com/convergence-dev/convergence/pkg/events/consumer"
	"github.com/convergence-dev/convergence/services/provisioner"
)

func TestCrash_ProvisionerDiesBetweenContainerCreateAndDatabaseUpdate_NextStartRunsTheTenant(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.stop()
	created := make(chan int64, 1)
	resume := make(chan struct{})
	h.start(func(s *provisioner.Service) {
		provisioner.SetAfterEnsureHook(s, func(envID int64) {
			created <- envID
			<-resume // the "crash" happens here: the service is stopped before it goes on
		})
	})
	code, body := h.do(http.MethodPost, "/api/v1/tenant/spawn?async=true", map[string]any{"name": "phoenix"})
	require.Equal(t, http.StatusAccepted, code, "%v", body)
	envID := envIDOf(body["tenant"].(map[string]any))
	select {
	case id := <-created:
		require.Equal(t, envID, id)
	case <-time.After(30 * time.Second):
		t.Fatal("the provisioner never created the container")
	}
	h.kill()
	close(resume)
	h.stop()

	// The container runs, the database does not know it yet.
	var status string
	require.NoError(t, h.pool.QueryRow(t.Context(), `SELECT status FROM environments WHERE id = $1`, envID).Scan(&status))
	require.Equal(t, "provisioning", status)
	before := h.inspect(envID)
	require.True(t, before.State.Running)

	h.start()
	st := h.waitStatus(envID, "running", 30*time.Second)
	require.Equal(t, "healthy", st["health"])
	containers, networks := h.objects(envID)
	require.Len(t, containers, 1, "nothing orphaned: the container made before the crash was adopted")
	require.Len(t, networks, 1)
	require.Equal(t, before.ID, containers[0].ID)
	port := int(st["port"].(float64))
	require.Equal(t, port, h.leasedPort(envID))
	code, _ = get(t, healthURL(port))
	require.Equal(t, http.StatusOK, code)
	require.FileExists(t, h.svc.ComposeFilePath(envID))
}

func TestLifecycle_IntegratorConsumingPkgEvents_SeesProvisioningRunningDestroyedInOrder(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	facts := make(chan events.TenantLifecycle, 32)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- consumer.Lifecycle(ctx, h.nats.JetStreamAs(natsauth.Integrator), "integrator", "", func(_ context.Context, e consumer.Event[events.TenantLifecycle]) error {
			facts <- e.Data
			return nil
		}, h.logger)
	}()
	defer func() {
		cancel()
		require.NoError(t, <-done)
	}()

	envID := envIDOf(h.spawn("observed"))
	code, body := h.do(http.MethodDelete, tenantPath(envID, ""), nil)
	require.Equal(t, http.StatusOK, code, "%v", body)

	var got []events.TenantLifecycle
	timeout := time.After(30 * time.Second)
	for len(got) == 0 || got[len(got)-1].State != events.StateDestroyed {
		select {
		case f := <-facts:
			require.Equal(t, envID, f.EnvID)
			got = append(got, f)
		case <-timeout:
			t.Fatalf("no destroyed fact; got %v", got)
		}
	}
	var states []events.TenantState
	for i, f := range got {
		states = append(states, f.State)
		require.Equal(t, "observed", f.Name)
		require.EqualValues(t, 1, f.OrgID)
		if i > 0 {
			require.Equal(t, got[i-1].State, f.PrevState, "each fact names the state it left")
			require.False(t, f.At.Before(got[i-1].At), "facts in time order")
		}
	}
	require.Equal(t, []events.TenantState{events.StateProvisioning, events.StateRunning, events.StateDestroyed}, states)
}

func TestHealthWatcher_ContainerStoppedAndStartedOutsideThePlatform_StoppedThenRunningAgain(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	envID := envIDOf(h.spawn("moody"))
	name := h.svc.Runtime().ContainerName(envID)

	grace := 5
	require.NoError(t, h.cli.ContainerStop(t.Context(), name, container.StopOptions{Timeout: &grace}))
	st := h.waitStatus(envID, "stopped", 15*time.Second)
	require.Contains(t, st["reason"], "exited with code 0")

	require.NoError(t, h.cli.ContainerStart(t.Context(), name, container.StartOptions{}))
	st = h.waitStatus(envID, "running", 15*time.Second)
	require.Equal(t, "healthy", st["health"])
}

func TestHealthWatcher_ContainerRemovedOutsideThePlatform_RecreatedOnItsPort(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	tenant := h.spawn("resilient")
	envID, port := envIDOf(tenant), int(tenant["port"].(float64))
	h.removeAndAwaitRecreated(envID, port, 20*time.Second, "the missing container was not recreated")
	st := h.status(envID)
	require.Equal(t, "running", st["status"])
	require.InDelta(t, port, st["port"], 0)
	containers, _ := h.objects(envID)
	require.Len(t, containers, 1)
	require.Equal(t, []string{provisioner.DockerRuntime(h.svc).VolumeName(envID)}, h.volumes(envID),
		"the removed container's secrets volume is used again, not left behind")
}

func TestDestroy_WhileSpawning_DestroyedWithNothingLeft(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	code, body := h.do(http.MethodPost, "/api/v1/tenant/spawn?async=true", map[string]any{"name": "fleeting"})
	require.Equal(t, http.StatusAccepted, code, "%v", body)
	envID := envIDOf(body["tenant"].(map[string]any))
	code, body = h.do(http.MethodDelete, tenantPath(envID, ""), nil)
	require.Equal(t, http.StatusOK, code, "%v", body)
	require.Equal(t, "destroyed", body["tenant"].(map[string]any)["status"])

	// A spawn command that arrives after the destroy must not bring anything back.
	time.Sleep(time.Second)
	containers, networks := h.objects(envID)
	require.Empty(t, containers)
	require.Empty(t, networks)
	require.Empty(t, h.volumes(envID), "the secrets volume went with the tenant")
	require.Zero(t, h.leasedPort(envID))
	_, err := os.Stat(h.svc.ComposeFilePath(envID))
	require.True(t, os.IsNotExist(err), "compose file removed: %v", err)
}

func TestSpawn_AppCrashesAtStart_ErrorWithExitReasonAndArchivedLogs(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.stop()
	stopAdmitting := h.admitOnly()
	code, body := h.do(http.MethodPost, "/api/v1/tenant/spawn?async=true", map[string]any{"name": "doomed"})
	require.Equal(t, http.StatusAccepted, code, "%v", body)
	stopAdmitting()
	envID := envIDOf(body["tenant"].(map[string]any))
	// One PID leaves the Go runtime no thread to start: the app aborts at once, as a broken
	// tenant app would. (The API refuses such a limit; the row is changed behind its back.)
	_, err := h.pool.Exec(t.Context(), `UPDATE environments SET pids_limit = 1 WHERE id = $1`, envID)
	require.NoError(t, err)
	h.start()

	st := h.waitStatus(envID, "error", 30*time.Second)
	require.Contains(t, st["reason"], "exited with code 2")
	require.Contains(t, st["reason"], "failed to create new OS thread", "the reason carries the app's own last words")
	require.Nil(t, st["port"])
	require.Zero(t, h.leasedPort(envID))
	containers, networks := h.objects(envID)
	require.Empty(t, containers, "nothing left running")
	require.Empty(t, networks)
	require.Empty(t, h.volumes(envID))

	logs := h.raw(http.MethodGet, tenantPath(envID, "/logs"), nil)
	require.Equal(t, http.StatusOK, logs.code)
	require.Equal(t, "archive", logs.header.Get("X-Log-Source"))
	// The archive keeps the last lines the container wrote: the Go runtime's crash report.
	// Which process runs out of threads first, the app or runc's init, varies; the latter's
	// report is longer than the archive's 200 lines, which then miss its first line (the
	// reason keeps it, above).
	require.Regexp(t, `(?m)^goroutine \d+ `, string(logs.body))
}

func TestReplicas_OneLeads_TheOtherTakesOverWatchingAndReconcilingWhenItStops(t *testing.T) {
	t.Parallel()
	h := newHarness(t) // the first replica, which leads
	_, second, _, _ := h.launch()
	require.True(t, leading(h.reg))

	// Both replicas take commands; only the leader watches and reconciles.
	tenant := h.spawn("failover")
	envID, port := envIDOf(tenant), int(tenant["port"].(float64))
	require.False(t, leading(second))
	require.Zero(t, reconcilePasses(second), "a replica that does not lead does not reconcile")

	h.stop()
	require.Eventually(t, func() bool { return leading(second) && reconcilePasses(second) > 0 }, 30*time.Second, 50*time.Millisecond,
		"the second replica did not take over when the leader stopped")

	// The new leader's health watcher repairs what the old one would have.
	h.removeAndAwaitRecreated(envID, port, 30*time.Second, "the new leader did not recreate the missing container")
}
