package provisioner_test

import (
	"net/http"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/stretchr/testify/require"

	"github.com/convergence-dev/convergence/internal/dockertest"
	"github.com/convergence-dev/convergence/services/provisioner"
	"github.com/convergence-dev/convergence/services/provisioner/runtime"
)

func TestReconcile_LabelledContainerUnknownToDatabase_RemovedAfterGrace_UnlabelledOneUntouched(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(c *provisioner.Config) {
		c.OrphanGrace = 6 * time.Second
		c.ReconcileInterval = 500 * time.Millisecond
	})
	ctx := t.Context()
	// The objects are made while the provisioner is stopped: on a busy engine a pass between
	// the network and the container would see a lone network, older than the grace period
	// by the time the container comes, and rightly remove it.
	h.stop()
	// An orphan: a tenant container and network for an env id this database never had, as a
	// provisioner whose database was restored from an older backup would find.
	orphan := runtime.Spec{EnvID: 9001, OrgID: 1, Name: "orphan", Image: h.image, HostPort: dockertest.FreePort(t)}
	_, err := h.svc.Runtime().Ensure(ctx, orphan)
	require.NoError(t, err)
	// A bystander with the name a tenant would have but without the convergence labels: not
	// ours, whatever its name says. (It carries the test run's label only for the cleanup.)
	bystander, err := h.cli.ContainerCreate(ctx, &container.Config{Image: h.image, Labels: h.run.Labels}, nil, nil, nil,
		h.svc.Runtime().ContainerName(9002))
	require.NoError(t, err)
	h.start()

	// Younger than the grace period: kept, since it may be another database's tenant.
	time.Sleep(time.Second)
	containers, _ := h.objects(9001)
	require.Len(t, containers, 1, "a young orphan is kept")

	require.Eventually(t, func() bool {
		containers, networks := h.objects(9001)
		return len(containers) == 0 && len(networks) == 0
	}, 20*time.Second, 100*time.Millisecond, "the orphan was not removed")
	_, err = h.cli.ContainerInspect(ctx, bystander.ID)
	require.NoError(t, err, "an object without our labels is never touched")
}

func TestReconcile_ProvisioningPastDeadlineWithoutCommand_ErrorWithReasonAndNothingLeft(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	// A tenant whose spawn command was lost an hour ago (the API's transaction, without the
	// command): nobody will ever provision it.
	var envID int64
	require.NoError(t, h.pool.QueryRow(t.Context(), `
		INSERT INTO environments (org_id, name, status, image, status_changed_at)
		VALUES (1, 'stuck', 'provisioning', $1, now() - interval '1 hour') RETURNING id`, h.image).Scan(&envID))
	_, err := h.pool.Exec(t.Context(), `
		UPDATE tenant_ports SET env_id = $1, leased_at = now() WHERE port = (SELECT min(port) FROM tenant_ports)`, envID)
	require.NoError(t, err)

	st := h.waitStatus(envID, "error", 20*time.Second)
	require.Contains(t, st["reason"], "still provisioning after 1h0m")
	require.Nil(t, st["port"])
	require.Zero(t, h.leasedPort(envID), "its port went back to the pool")
	containers, networks := h.objects(envID)
	require.Empty(t, containers)
	require.Empty(t, networks)
}

func TestReconcile_SpawnAdmittedWhileNoneRan_ResumedAtStart(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.stop()
	stopAdmitting := h.admitOnly()
	code, body := h.do(http.MethodPost, "/api/v1/tenant/spawn?async=true", map[string]any{"name": "patient"})
	require.Equal(t, http.StatusAccepted, code, "%v", body)
	stopAdmitting()
	envID := envIDOf(body["tenant"].(map[string]any))
	_, err := h.pool.Exec(t.Context(), `UPDATE environments SET status_changed_at = now() - interval '1 hour' WHERE id = $1`, envID)
	require.NoError(t, err)

	h.start()
	st := h.waitStatus(envID, "running", 30*time.Second)
	require.True(t, answers(t, int(st["port"].(float64))))
}

func TestReconcile_DestroyedTenantWithLeftoverContainer_LeftoverRemoved(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	tenant := h.spawn("lingering")
	envID := envIDOf(tenant)
	code, _ := h.do(http.MethodDelete, tenantPath(envID, ""), nil)
	require.Equal(t, http.StatusOK, code)
	require.Eventually(t, func() bool {
		containers, networks := h.objects(envID)
		return len(containers) == 0 && len(networks) == 0
	}, 15*time.Second, 100*time.Millisecond, "the destroy did not finish")
	// A replica that lost a race recreates the container after the destroy. The provisioner may
	// already be removing the leftover while it is made: then the making fails on a part gone.
	spec := runtime.Spec{EnvID: envID, OrgID: 1, Name: "lingering", Image: h.image, HostPort: dockertest.FreePort(t),
		Env: map[string]string{provisioner.EnvEnvID: strconv.FormatInt(envID, 10)}}
	if _, err := h.svc.Runtime().Ensure(t.Context(), spec); err != nil {
		require.ErrorContains(t, err, "not found")
	}

	require.Eventually(t, func() bool {
		containers, networks := h.objects(envID)
		return len(containers) == 0 && len(networks) == 0
	}, 15*time.Second, 100*time.Millisecond, "the leftover of a destroyed tenant was not removed")
	require.Equal(t, "destroyed", h.status(envID)["status"])
}

func TestReconcile_EgressRulesFlushed_InstalledAgain(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(c *provisioner.Config) { c.ReconcileInterval = 300 * time.Millisecond })
	p := provisioner.DockerRuntime(h.svc).Egress()
	apiRule := "input: platform tcp dport 3000 accept # the platform API" // the default tenant API URL's port
	rules, err := p.Installed()
	require.NoError(t, err, "the provisioner installed its table at start")
	require.Contains(t, rules, apiRule)

	// As `nft flush ruleset` or a firewall reload would leave it.
	require.NoError(t, p.Remove())
	require.Eventually(t, func() bool {
		rules, err := p.Installed()
		return err == nil && slices.Contains(rules, apiRule)
	}, 15*time.Second, 50*time.Millisecond, "the reconciler did not install the rules again")
}
