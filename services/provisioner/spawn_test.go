package provisioner_test

import (
	"archive/tar"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/mount"
	"github.com/docker/docker/client"
	"github.com/stretchr/testify/require"

	"github.com/convergence-dev/convergence/internal/apikey"
	"github.com/convergence-dev/convergence/services/provisioner/runtime"
)

func TestSpawn_Sync_RunsHardenedTenant_StatusLogsDestroyFreeEverything(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	first := h.firstPort()

	code, body := h.do(http.MethodPost, "/api/v1/tenant/spawn", map[string]any{
		"name": "acme-corp-ai", "language": "go",
		"limits": map[string]any{"memoryMb": 128, "cpus": 0.25, "pids": 64},
	})
	require.Equal(t, http.StatusCreated, code, "%v", body)
	require.Equal(t, true, body["success"])
	tenant := body["tenant"].(map[string]any)
	envID := envIDOf(tenant)
	require.Positive(t, envID)
	require.Equal(t, "acme-corp-ai", tenant["name"])
	require.Equal(t, "running", tenant["status"])
	require.InDelta(t, first, tenant["port"], 0, "the lowest free port of the range")
	key, _ := tenant["apiKey"].(string)
	require.True(t, apikey.WellFormed(key), "apiKey %q", key)
	createdAt, err := time.Parse(time.RFC3339Nano, tenant["createdAt"].(string))
	require.NoError(t, err)
	require.WithinDuration(t, time.Now(), createdAt, time.Minute)

	// The key is stored as its digest only.
	var digest []byte
	require.NoError(t, h.pool.QueryRow(t.Context(), `SELECT api_key_hash FROM environments WHERE id = $1`, envID).Scan(&digest))
	require.Equal(t, apikey.Digest(key), digest)

	// The container is hardened, and inspect proves it.
	c := h.inspect(envID)
	require.True(t, c.State.Running)
	require.Equal(t, runtime.DefaultUser, c.Config.User, "non-root")
	require.True(t, c.HostConfig.ReadonlyRootfs, "read-only root")
	require.Equal(t, []string{"ALL"}, []string(c.HostConfig.CapDrop))
	require.Empty(t, c.HostConfig.CapAdd)
	require.Contains(t, c.HostConfig.SecurityOpt, "no-new-privileges")
	require.False(t, c.HostConfig.Privileged)
	require.Equal(t, int64(128<<20), c.HostConfig.Memory)
	require.Equal(t, c.HostConfig.Memory, c.HostConfig.MemorySwap, "no swap")
	require.Equal(t, int64(250_000_000), c.HostConfig.NanoCPUs)
	require.NotNil(t, c.HostConfig.PidsLimit)
	require.Equal(t, int64(64), *c.HostConfig.PidsLimit)
	require.Contains(t, c.HostConfig.Tmpfs["/tmp"], "noexec")
	require.Len(t, c.Mounts, 1, "nothing of the host mounted, least of all the Docker socket: only the secrets volume")
	require.Equal(t, mount.TypeVolume, c.Mounts[0].Type)
	require.Equal(t, runtime.SecretsDir, c.Mounts[0].Destination)
	for _, kv := range c.Config.Env {
		require.NotContains(t, kv, key, "the key is not in the environment")
	}
	require.Contains(t, c.Config.Env, "CONVERGENCE_API_KEY_FILE="+runtime.SecretsDir+"/api-key")
	// The key file: the key, readable by the tenant's user alone.
	rc, stat, err := h.cli.CopyFromContainer(t.Context(), c.ID, runtime.SecretsDir+"/api-key")
	require.NoError(t, err)
	defer rc.Close()
	require.Equal(t, os.FileMode(0o400), stat.Mode.Perm())
	tr := tar.NewReader(rc)
	hdr, err := tr.Next()
	require.NoError(t, err)
	require.Equal(t, 65532, hdr.Uid)
	content, err := io.ReadAll(tr)
	require.NoError(t, err)
	require.Equal(t, key, string(content))
	require.Contains(t, c.Config.Env, "CONVERGENCE_ENV_ID="+strconv.FormatInt(envID, 10))
	require.Contains(t, c.Config.Env, "CONVERGENCE_API_URL=http://host.docker.internal:3000")
	require.Contains(t, c.HostConfig.ExtraHosts, "host.docker.internal:host-gateway")
	require.Equal(t, strconv.FormatInt(envID, 10), c.Config.Labels[runtime.LabelEnvID])
	require.Equal(t, "1", c.Config.Labels[runtime.LabelOrgID])
	require.Equal(t, "1", c.Config.Labels[runtime.LabelGeneration])
	require.NotEmpty(t, c.Config.Labels[runtime.LabelSpecHash])
	require.Equal(t, h.svc.Runtime().NetworkName(envID), string(c.HostConfig.NetworkMode), "a network of its own")

	status, health := get(t, healthURL(first))
	require.Equal(t, http.StatusOK, status)
	require.JSONEq(t, `{"status":"ok"}`, health)

	// The compose file describes the same container; it does not hold the key, and only we
	// read it all the same.
	composePath := h.svc.ComposeFilePath(envID)
	info, err := os.Stat(composePath)
	require.NoError(t, err)
	require.Equal(t, fs.FileMode(0o600), info.Mode().Perm())
	compose, err := os.ReadFile(composePath)
	require.NoError(t, err)
	require.Contains(t, string(compose), `container_name: "`+h.svc.Runtime().ContainerName(envID)+`"`)
	require.Contains(t, string(compose), c.Config.Labels[runtime.LabelSpecHash])
	require.NotContains(t, string(compose), key)

	st := h.status(envID)
	require.Equal(t, "running", st["status"])
	require.Equal(t, "healthy", st["health"])
	require.InDelta(t, first, st["port"], 0)
	live := st["container"].(map[string]any)
	require.Equal(t, "running", live["state"])
	require.InDelta(t, first, live["port"], 0)
	require.InDelta(t, 0, live["restartCount"], 0)
	require.GreaterOrEqual(t, live["cpuPercent"].(float64), 0.0)
	require.InDelta(t, 0.25, live["cpuLimit"], 1e-9)
	require.Positive(t, live["memoryBytes"].(float64))
	require.InDelta(t, 128<<20, live["memoryLimitBytes"], 0)
	require.GreaterOrEqual(t, live["uptimeSeconds"].(float64), 0.0)
	require.NotEmpty(t, live["startedAt"])

	logs := h.raw(http.MethodGet, tenantPath(envID, "/logs?tail=50"), nil)
	require.Equal(t, http.StatusOK, logs.code)
	require.Equal(t, "container", logs.header.Get("X-Log-Source"))
	require.Contains(t, string(logs.body), "tenant listening")

	// Destroy: everything goes, the logs stay readable.
	code, body = h.do(http.MethodDelete, tenantPath(envID, ""), nil)
	require.Equal(t, http.StatusOK, code, "%v", body)
	require.Equal(t, "destroyed", body["tenant"].(map[string]any)["status"])
	containers, networks := h.objects(envID)
	require.Empty(t, containers, "container removed")
	require.Empty(t, networks, "network removed")
	_, err = h.cli.ContainerInspect(t.Context(), h.svc.Runtime().ContainerName(envID))
	require.True(t, client.IsErrNotFound(err), "container inspect: %v", err) //nolint:staticcheck // containerd/errdefs is not a direct requirement yet.
	require.NoFileExists(t, composePath)
	require.Zero(t, h.leasedPort(envID), "port lease released")

	st = h.status(envID)
	require.Equal(t, "destroyed", st["status"])
	require.Nil(t, st["port"])
	require.NotEmpty(t, st["destroyedAt"])
	logs = h.raw(http.MethodGet, tenantPath(envID, "/logs"), nil)
	require.Equal(t, http.StatusOK, logs.code)
	require.Equal(t, "archive", logs.header.Get("X-Log-Source"))
	require.Contains(t, string(logs.body), "tenant listening")
	require.Contains(t, string(logs.body), "tenant stopped", "the archive ends with the shutdown")

	// A second destroy is no error and leaves nothing behind.
	code, body = h.do(http.MethodDelete, tenantPath(envID, ""), nil)
	require.Equal(t, http.StatusOK, code, "%v", body)
	require.Equal(t, "destroyed", body["tenant"].(map[string]any)["status"])

	// The port is free again: the next spawn gets it, and may reuse the name.
	again := h.spawn("acme-corp-ai")
	require.InDelta(t, first, again["port"], 0)
	require.NotEqual(t, envID, envIDOf(again))
}

func TestSpawn_TwentyConcurrentInOneOrg_DistinctPortsAndKeysAllRunning(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	code, body := h.do(http.MethodPost, "/api/v1/orgs", map[string]any{"name": "swarm", "plan": "pro"})
	require.Equal(t, http.StatusCreated, code, "%v", body)
	orgID := body["organization"].(map[string]any)["orgId"]

	const n = 20
	tenants := make([]map[string]any, n)
	codes := make([]int, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			code, body, err := h.try(http.MethodPost, "/api/v1/tenant/spawn", map[string]any{"name": "t" + strconv.Itoa(i), "orgId": orgID})
			codes[i] = code
			if t, ok := body["tenant"].(map[string]any); ok && err == nil {
				tenants[i] = t
			}
		})
	}
	wg.Wait()
	ports, keys := map[float64]bool{}, map[string]bool{}
	for i, tn := range tenants {
		require.Equal(t, http.StatusCreated, codes[i], "spawn %d: %v", i, tn)
		require.Equal(t, "running", tn["status"])
		ports[tn["port"].(float64)] = true
		keys[tn["apiKey"].(string)] = true
	}
	require.Len(t, ports, n, "distinct ports")
	require.Len(t, keys, n, "distinct keys")
	for p := range ports {
		code, _ := get(t, healthURL(int(p)))
		require.Equal(t, http.StatusOK, code, "tenant on port %v answers", p)
	}
	containers, _ := h.objects(0)
	require.Len(t, containers, n)
	for _, c := range containers {
		require.Equal(t, "running", c.State)
	}

	code, body = h.do(http.MethodGet, "/api/v1/tenant?status=running&limit=200&orgId="+strconv.Itoa(int(orgID.(float64))), nil)
	require.Equal(t, http.StatusOK, code)
	require.Len(t, body["tenants"], n)
}

func TestSpawn_SameNameConcurrently_OneCreatedOneConflict(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	codes := make([]int, 2)
	bodies := make([]map[string]any, 2)
	var wg sync.WaitGroup
	for i := range 2 {
		wg.Go(func() {
			codes[i], bodies[i], _ = h.try(http.MethodPost, "/api/v1/tenant/spawn", map[string]any{"name": "twin"})
		})
	}
	wg.Wait()
	created, conflict := 0, 1
	if codes[0] != http.StatusCreated {
		created, conflict = 1, 0
	}
	require.Equal(t, http.StatusCreated, codes[created], "%v", bodies[created])
	require.Equal(t, http.StatusConflict, codes[conflict], "%v", bodies[conflict])
	require.Contains(t, bodies[conflict]["error"].(map[string]any)["message"], `"twin" already exists`)
	containers, _ := h.objects(0)
	require.Len(t, containers, 1)
}

func TestSpawn_ImageDoesNotExist_ErrorWithReasonPortReleasedNothingLeft(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	code, body := h.do(http.MethodPost, "/api/v1/tenant/spawn", map[string]any{"name": "ghost", "image": "convergence/no-such-image:never"})
	require.Equal(t, http.StatusUnprocessableEntity, code, "%v", body)
	require.Equal(t, false, body["success"])
	e := body["error"].(map[string]any)
	require.Equal(t, "spawn_failed", e["code"])
	require.Contains(t, e["message"], "convergence/no-such-image:never")
	require.Contains(t, e["message"], "not on the Docker host")
	tenant := body["tenant"].(map[string]any)
	envID := envIDOf(tenant)
	require.Equal(t, "error", tenant["status"])
	require.Nil(t, tenant["port"], "port released")
	require.Zero(t, h.leasedPort(envID))

	st := h.status(envID)
	require.Equal(t, "error", st["status"])
	require.Contains(t, st["reason"], "image not found")
	require.Equal(t, "missing", st["container"].(map[string]any)["state"])
	containers, networks := h.objects(0)
	require.Empty(t, containers, "nothing left running")
	require.Empty(t, networks)
	require.NoFileExists(t, h.svc.ComposeFilePath(envID))

	// The port went back to the pool: the next tenant gets it.
	next := h.spawn("real")
	require.InDelta(t, h.firstPort(), next["port"], 0)
}

func TestSpawn_LowestPortHeldByAnotherProcess_TenantGetsTheNextOne(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	first := h.firstPort()
	squatter, err := (&net.ListenConfig{}).Listen(t.Context(), "tcp", "127.0.0.1:"+strconv.Itoa(first))
	require.NoError(t, err)
	defer squatter.Close()

	tenant := h.spawn("beside")
	require.InDelta(t, first+1, tenant["port"], 0)
	var until *time.Time
	require.NoError(t, h.pool.QueryRow(t.Context(), `SELECT unavailable_until FROM tenant_ports WHERE port = $1`, first).Scan(&until))
	require.NotNil(t, until, "the held port is skipped for a while")
	require.True(t, until.After(time.Now()))
	code, _ := get(t, healthURL(first+1))
	require.Equal(t, http.StatusOK, code)
}
