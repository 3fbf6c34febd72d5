package ha_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/swarm"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/convergence-dev/convergence/internal/dockertest"
	contract "github.com/convergence-dev/convergence/pkg/api"
	"github.com/convergence-dev/convergence/services/provisioner/runtime"
	"github.com/convergence-dev/convergence/services/provisioner/runtime/swarmtest"
)

// requireHA skips a fault test that only `make test-ha` runs.
func requireHA(t *testing.T) {
	t.Helper()
	if os.Getenv("CONVERGENCE_TEST_HA") != "1" {
		t.Skip("a fault test of make test-ha: set CONVERGENCE_TEST_HA=1")
	}
}

func TestFault_ReplicaOfEveryServiceKilled_NothingLostOrDoubled(t *testing.T) {
	c := startCluster(t, 3)
	faultUnderLoad(t, c, "one replica of every service killed (SIGKILL), then started again", func() {
		c.replicas[0].kill(t)
		time.Sleep(2 * time.Second) // load on the surviving replica alone
		c.replicas[0].start(t)
	})
}

func TestFault_NATSNodeStopped_NothingLostOrDoubled(t *testing.T) {
	requireHA(t)
	c := startCluster(t, 3)
	faultUnderLoad(t, c, "one of three JetStream nodes stopped", func() { c.stopNATSNode(0) })
}

func TestFault_PostgresRestarted_NothingLostOrDoubled(t *testing.T) {
	requireHA(t)
	c := startCluster(t, 3)
	faultUnderLoad(t, c, "PostgreSQL restarted (fast shutdown)", c.restartPostgres)
}

func TestFault_SwarmTaskOfATenantStopped_NothingLostOrDoubled(t *testing.T) {
	requireHA(t)
	swarmtest.Require(t)
	c := startCluster(t, 3, "-provisioner.runtime", "swarm",
		"-provisioner.runtime.swarm-publish-mode", "host", "-provisioner.runtime.host-ip", "0.0.0.0")
	victim := c.spawn(t, "victim")
	cli := dockertest.Client(t)
	faultUnderLoad(t, c, "a tenant's Swarm task killed (SIGKILL to its container)", func() {
		tasks, err := cli.ContainerList(t.Context(), container.ListOptions{
			Filters: filters.NewArgs(filters.Arg("label", "com.docker.swarm.service.name="+*victim.ContainerName))})
		require.NoError(t, err)
		require.Len(t, tasks, 1, "the tenant's one running task")
		require.NoError(t, cli.ContainerKill(t.Context(), tasks[0].ID, "KILL"))
		killed := time.Now()
		require.NotNil(t, victim.Port)
		health := fmt.Sprintf("http://127.0.0.1:%d/health", *victim.Port)
		require.Eventually(t, func() bool {
			code, _, err := send(t.Context(), http.MethodGet, health, "", "", nil)
			return err == nil && code == http.StatusOK
		}, time.Minute, 50*time.Millisecond, "the tenant never answered again")
		t.Logf("the tenant answered /health again %s after its task was killed", time.Since(killed).Round(time.Millisecond))
	})
	var status string
	require.NoError(t, c.Pool.QueryRow(t.Context(), `SELECT status FROM provisioner.environments WHERE id = $1`, victim.EnvID).Scan(&status))
	require.Equal(t, "running", status, "swarm started the tenant's task again and the provisioner saw it")
}

// faultUnderLoad runs the load for a while, makes the fault, runs it on, and then checks that
// the platform lost and doubled nothing. It prints how long after the fault the platform
// answered a synchronous converge request again.
func faultUnderLoad(t *testing.T, c *cluster, name string, fault func()) {
	t.Helper()
	tenants := []contract.Tenant{c.spawn(t, "steady-1"), c.spawn(t, "steady-2")}
	l := startLoad(t, c, tenants)
	time.Sleep(5 * time.Second)

	faultAt := time.Now()
	fault()
	recovered := c.waitConverging(t, tenants[0].APIKey, 3*time.Minute)
	t.Logf("%s: a synchronous converge request answered again %s after the fault", name, recovered.Sub(faultAt).Round(time.Millisecond))
	time.Sleep(5 * time.Second)
	l.stop()
	t.Logf("load: %d tasks accepted, %d spawns and %d destroys accepted, %d requests left undecided",
		l.accepted.Load(), l.spawns.Load(), l.destroys.Load(), l.undecided.Load())
	require.Positive(t, l.accepted.Load())

	settled := time.Now()
	c.requireTasksFinished(t, 3*time.Minute)
	c.requireLedgerExact(t, 2*time.Minute)
	c.requireTenantsMatchContainers(t, 2*time.Minute)
	t.Logf("%s: everything settled %s after the load stopped", name, time.Since(settled).Round(time.Millisecond))
}

// load sends converge requests of the given tenants to the replicas in turn, and spawns and
// destroys short-lived tenants, until stop. Every request has an Idempotency-Key and is sent
// again, to the next replica, until it is decided (a 2xx or 4xx answer), so a request that a
// dying replica took is neither lost nor made twice. One that stays undecided (its key held by
// a request that never answered) is counted.
type load struct {
	c                           *cluster
	accepted, spawns, destroys  atomic.Int64
	undecided                   atomic.Int64
	next                        atomic.Int64
	cancel                      context.CancelFunc
	wg                          sync.WaitGroup
	idempotencyKeys, spawnNames atomic.Int64
}

func startLoad(t *testing.T, c *cluster, tenants []contract.Tenant) *load {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	l := &load{c: c, cancel: cancel}
	t.Cleanup(l.stop)
	for _, tn := range tenants {
		l.wg.Go(func() {
			for i := 0; ctx.Err() == nil; i++ {
				code, _ := l.decide(ctx, http.MethodPost, "/api/v1/converge", tn.APIKey, map[string]any{
					"prompt": fmt.Sprintf("request %d of tenant %d", i, tn.EnvID), "async": true})
				if code == http.StatusAccepted {
					l.accepted.Add(1)
				}
				sleep(ctx, 200*time.Millisecond)
			}
		})
	}
	l.wg.Go(func() {
		var previous int64
		for ctx.Err() == nil {
			code, body := l.decide(ctx, http.MethodPost, "/api/v1/tenant/spawn?async=true", adminToken,
				map[string]any{"name": fmt.Sprintf("passing-%d", l.spawnNames.Add(1))})
			var ans contract.TenantAnswer
			if code == http.StatusAccepted && json.Unmarshal(body, &ans) == nil {
				l.spawns.Add(1)
				if previous != 0 {
					if code, _ := l.decide(ctx, http.MethodDelete, "/api/v1/tenant/"+strconv.FormatInt(previous, 10), adminToken, nil); code/100 == 2 {
						l.destroys.Add(1)
					}
				}
				previous = ans.Tenant.EnvID
			}
			sleep(ctx, 3*time.Second)
		}
	})
	return l
}

func (l *load) stop() {
	l.cancel()
	l.wg.Wait()
}

// decide sends the request until it is decided, or ctx is done, or 15 seconds have passed;
// it returns the deciding answer, or 0. A request sent at least once and never decided is
// counted: a replica took it and never answered (its key stays held a while), or every
// replica failed it.
func (l *load) decide(ctx context.Context, method, path, token string, body any) (int, []byte) {
	key := fmt.Sprintf("ha-%d-%d", time.Now().UnixNano(), l.idempotencyKeys.Add(1))
	sent := false
	for deadline := time.Now().Add(15 * time.Second); ctx.Err() == nil && time.Now().Before(deadline); {
		r := l.c.replicas[int(l.next.Add(1))%len(l.c.replicas)]
		code, b, err := send(context.WithoutCancel(ctx), method, r.API+path, token, key, body)
		sent = true
		switch {
		case err != nil, code >= 500, code == http.StatusTooManyRequests:
			sleep(ctx, 100*time.Millisecond)
		case code == http.StatusConflict && strings.Contains(string(b), "idempotency_key_in_use"):
			sleep(ctx, 500*time.Millisecond)
		default:
			return code, b
		}
	}
	if sent {
		l.undecided.Add(1)
	}
	return 0, nil
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// spawn spawns a tenant and waits until it runs.
func (c *cluster) spawn(t testing.TB, name string) contract.Tenant {
	t.Helper()
	code, body, err := send(t.Context(), http.MethodPost, c.replicas[0].API+"/api/v1/tenant/spawn", adminToken, "", map[string]any{"name": name})
	require.NoError(t, err)
	require.Equal(t, http.StatusCreated, code, "spawn %s: %s", name, body)
	var ans contract.TenantAnswer
	require.NoError(t, json.Unmarshal(body, &ans))
	require.NotEmpty(t, ans.Tenant.APIKey)
	return ans.Tenant
}

// waitConverging sends synchronous converge requests to the replicas in turn until one is
// answered with a finished task, and returns when that happened.
func (c *cluster) waitConverging(t testing.TB, key string, within time.Duration) time.Time {
	t.Helper()
	deadline := time.Now().Add(within)
	for i := 0; time.Now().Before(deadline); i++ {
		r := c.replicas[i%len(c.replicas)]
		code, body, err := send(t.Context(), http.MethodPost, r.API+"/api/v1/converge", key, "", map[string]any{"prompt": "are you there?"})
		if err == nil && code == http.StatusOK {
			var ans contract.TaskAnswer
			if json.Unmarshal(body, &ans) == nil && ans.Task.Finished() {
				return time.Now()
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("no replica answered a converge request within %s; logs:\n%s\n%s", within, tail(c.replicas[0].log), tail(c.replicas[1].log))
	return time.Time{}
}

// requireTasksFinished waits until every task an API replica accepted is finished in the
// converger's records, and a failed one says why.
func (c *cluster) requireTasksFinished(t testing.TB, within time.Duration) {
	t.Helper()
	var open, unexplained, accepted int
	require.Eventually(t, func() bool {
		err := c.Pool.QueryRow(t.Context(), `
			SELECT count(*) FILTER (WHERE c.id IS NULL OR c.status NOT IN ('completed', 'failed', 'cancelled')),
			       count(*) FILTER (WHERE c.status = 'failed' AND coalesce(c.error, '') = ''),
			       count(*)
			FROM api.tasks a LEFT JOIN converger.convergence_tasks c ON c.id = a.id`).Scan(&open, &unexplained, &accepted)
		return err == nil && open == 0
	}, within, 500*time.Millisecond, "accepted tasks still unfinished")
	require.Zero(t, unexplained, "failed tasks without a reason")
	var failed int
	require.NoError(t, c.Pool.QueryRow(t.Context(), `SELECT count(*) FROM converger.convergence_tasks WHERE status = 'failed'`).Scan(&failed))
	t.Logf("tasks: %d accepted, all finished, %d failed with a reason", accepted, failed)
}

// requireLedgerExact waits until the ledger matches the converger's records exactly: every
// finished task billed once with its token counts, nothing billed that the converger does not
// know.
func (c *cluster) requireLedgerExact(t testing.TB, within time.Duration) {
	t.Helper()
	from := time.Now().UTC().AddDate(0, 0, -1).Format(time.DateOnly)
	var last string
	ok := assert.Eventually(t, func() bool {
		code, body, err := send(t.Context(), http.MethodGet, c.replicas[1].API+"/api/v1/usage/reconcile?from="+from, adminToken, "", nil)
		if err != nil || code != http.StatusOK {
			return false
		}
		var ans struct {
			Reconciliation struct {
				TasksChecked int               `json:"tasksChecked"`
				Matched      int               `json:"matched"`
				Missing      []json.RawMessage `json:"missing"`
				Mismatched   []json.RawMessage `json:"mismatched"`
				Orphaned     []json.RawMessage `json:"orphaned"`
			} `json:"reconciliation"`
		}
		if json.Unmarshal(body, &ans) != nil {
			return false
		}
		r := ans.Reconciliation
		last = string(body)
		return r.TasksChecked > 0 && r.Matched == r.TasksChecked && len(r.Missing)+len(r.Mismatched)+len(r.Orphaned) == 0
	}, within, time.Second)
	require.True(t, ok, "the ledger does not reconcile exactly with the converger's records; last report: %s", last)
	var tasks, billed int
	require.NoError(t, c.Pool.QueryRow(t.Context(), `
		SELECT (SELECT count(*) FROM converger.convergence_tasks WHERE status IN ('completed', 'failed', 'cancelled')),
		       (SELECT count(DISTINCT task_id) FROM metering.metering_ledger WHERE kind = 'task')`).Scan(&tasks, &billed))
	t.Logf("ledger: %d finished tasks, %d billed tasks, reconciliation exact", tasks, billed)
}

// requireTenantsMatchContainers waits until no tenant is on its way anywhere and then checks
// that each running tenant has exactly one container, each destroyed one none, and no
// container of the installation belongs to a tenant the database does not know.
func (c *cluster) requireTenantsMatchContainers(t testing.TB, within time.Duration) {
	t.Helper()
	require.Eventually(t, func() bool {
		var moving int
		err := c.Pool.QueryRow(t.Context(), `
			SELECT count(*) FROM provisioner.environments
			WHERE status NOT IN ('running', 'destroyed', 'error') OR (desired_status = 'destroyed' AND status <> 'destroyed')`).Scan(&moving)
		return err == nil && moving == 0
	}, within, 500*time.Millisecond, "tenants still provisioning or being destroyed")

	status := map[string]string{}
	rows, err := c.Pool.Query(t.Context(), `SELECT id::text, status FROM provisioner.environments`)
	require.NoError(t, err)
	for rows.Next() {
		var id, st string
		require.NoError(t, rows.Scan(&id, &st))
		status[id] = st
	}
	require.NoError(t, rows.Err())
	var instance string
	require.NoError(t, c.Pool.QueryRow(t.Context(), `SELECT id FROM provisioner.installation`).Scan(&instance))

	// A tenant's objects: its container, or its Swarm service.
	cli := dockertest.Client(t)
	mine := filters.NewArgs(filters.Arg("label", runtime.LabelInstance+"="+instance))
	var objects []map[string]string // their labels
	if c.swarm {
		services, err := cli.ServiceList(t.Context(), swarm.ServiceListOptions{Filters: mine})
		require.NoError(t, err)
		for _, svc := range services {
			objects = append(objects, svc.Spec.Labels)
		}
	} else {
		containers, err := cli.ContainerList(t.Context(), container.ListOptions{All: true, Filters: mine})
		require.NoError(t, err)
		for _, ctr := range containers {
			objects = append(objects, ctr.Labels)
		}
	}
	per := map[string]int{}
	for _, labels := range objects {
		id := labels[runtime.LabelEnvID]
		require.Contains(t, status, id, "a container or service belongs to no tenant the database knows: %v", labels)
		per[id]++
	}
	running := 0
	for id, st := range status {
		switch st {
		case "running":
			running++
			require.Equal(t, 1, per[id], "tenant %s runs with %d containers or services", id, per[id])
		case "destroyed":
			require.Zero(t, per[id], "destroyed tenant %s left %d containers or services", id, per[id])
		}
	}
	t.Logf("tenants: %d known, %d running, each with one container or service; %d in all", len(status), running, len(objects))
}
