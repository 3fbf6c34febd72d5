package api_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/convergence-dev/convergence/internal/apikey"
	"github.com/convergence-dev/convergence/internal/natsrpc"
	"github.com/convergence-dev/convergence/pkg/events"
	tenanttemplates "github.com/convergence-dev/convergence/tenant-templates"
)

// These tests run the API with a provisioner that admits tenants and answers for them but runs
// none (no container is made). The provisioner's tests run the whole path on the Docker engine.

func tenantOfBody(t *testing.T, body map[string]any) map[string]any {
	t.Helper()
	tn, ok := body["tenant"].(map[string]any)
	require.True(t, ok, "no tenant in %v", body)
	return tn
}

func errorMessage(body map[string]any) string {
	e, _ := body["error"].(map[string]any)
	m, _ := e["message"].(string)
	return m
}

func TestSpawn_InvalidInput_400SaysWhatIsValid(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t)
	a.startProvisioner()
	tests := []struct {
		name string
		path string
		body any
		want string
	}{
		{"upper case name", "", map[string]any{"name": "Acme"}, `name "Acme" is not valid: use 1-63 lowercase letters, digits and '-', starting and ending with a letter or digit`},
		{"name starts with dash", "", map[string]any{"name": "-acme"}, "starting and ending with a letter or digit"},
		{"name too long", "", map[string]any{"name": strings.Repeat("a", 64)}, "1-63 lowercase letters"},
		{"no name", "", map[string]any{"language": "go"}, `name "" is not valid`},
		{"underscore", "", map[string]any{"name": "acme_corp"}, "lowercase letters, digits and '-'"},
		{"image and language", "", map[string]any{"name": "a", "image": "x", "language": "go"}, "either language (and framework) or image, not both"},
		{"bad image", "", map[string]any{"name": "a", "image": "UPPER CASE"}, "is not a valid image reference"},
		{"unknown language", "", map[string]any{"name": "a", "language": "cobol"}, `language "cobol" is not a known template; use one of: go`},
		{"unknown framework", "", map[string]any{"name": "a", "language": "go", "framework": "rails"}, "use one of: net-http"},
		{"framework alone", "", map[string]any{"name": "a", "framework": "net-http"}, "framework needs a language"},
		{"memory too big", "", map[string]any{"name": "a", "limits": map[string]any{"memoryMb": 100000}}, "limits.memoryMb 100000 is out of range: use 32 to 4096"},
		{"cpus too small", "", map[string]any{"name": "a", "limits": map[string]any{"cpus": 0.001}}, "limits.cpus 0.001 is out of range: use 0.05 to 4"},
		{"pids", "", map[string]any{"name": "a", "limits": map[string]any{"pids": 1}}, "limits.pids 1 is out of range"},
		{"egress", "", map[string]any{"name": "a", "egress": "everywhere"}, `egress "everywhere" is not known: use platform, internet, none (default platform)`},
		{"org id", "", map[string]any{"name": "a", "orgId": 0}, "orgId 0 is not valid"},
		{"unknown field", "", map[string]any{"name": "a", "colour": "blue"}, `unknown field "colour"`},
		{"wrong type", "", map[string]any{"name": 7}, "name: must be a string, not a JSON number"},
		{"empty body", "", nil, "request body is empty"},
		{"async", "?async=maybe", map[string]any{"name": "a"}, `async "maybe" is not valid: use true or false`},
		{"wait", "?wait=1h", map[string]any{"name": "a"}, "use a duration from 1s to 5m0s"},
	}
	for _, tt := range tests {
		code, body := a.do(http.MethodPost, "/api/v1/tenant/spawn"+tt.path, adminToken, tt.body)
		require.Equal(t, http.StatusBadRequest, code, "%s: %v", tt.name, body)
		require.Equal(t, "invalid_request", errorCode(body), tt.name)
		require.Contains(t, errorMessage(body), tt.want, tt.name)
	}
	var n int
	require.NoError(t, a.Pool.QueryRow(t.Context(), `SELECT count(*) FROM environments`).Scan(&n))
	require.Zero(t, n, "nothing recorded")
}

func TestSpawn_Async_202_KeyShownOnceStoredHashedAndSealed_CommandAndFactWritten(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t)
	keys := a.startProvisioner()
	code, body := a.do(http.MethodPost, "/api/v1/tenant/spawn?async=true", adminToken, map[string]any{
		"name": "acme-corp-ai", "language": "go", "framework": "net-http", "limits": map[string]any{"memoryMb": 64, "cpus": 1, "pids": 100},
	})
	require.Equal(t, http.StatusAccepted, code, "%v", body)
	require.Equal(t, true, body["success"])
	tn := tenantOfBody(t, body)
	envID := int64(tn["envId"].(float64))
	require.Equal(t, "provisioning", tn["status"])
	require.Equal(t, "running", tn["desiredStatus"])
	require.InDelta(t, 3001, tn["port"], 0, "the lowest port of the default range")
	require.Equal(t, tenanttemplates.GoImage, tn["image"])
	require.Equal(t, map[string]any{"memoryMb": 64.0, "cpus": 1.0, "pids": 100.0}, tn["limits"])
	key := tn["apiKey"].(string)
	require.True(t, apikey.WellFormed(key))
	require.Equal(t, apikey.Display(key), tn["apiKeyPrefix"])

	var digest, apiDigest []byte
	require.NoError(t, a.Pool.QueryRow(t.Context(), `SELECT api_key_hash FROM environments WHERE id = $1`, envID).Scan(&digest))
	require.Equal(t, apikey.Digest(key), digest, "stored as its digest")
	require.NoError(t, a.Pool.QueryRow(t.Context(), `SELECT digest FROM api.tenant_keys WHERE env_id = $1`, envID).Scan(&apiDigest))
	require.Equal(t, digest, apiDigest, "the API authenticates with the digest too")
	opened, err := keys.OpenFor(t.Context(), a.Pool, envID)
	require.NoError(t, err)
	require.Equal(t, key, opened, "sealed for the provisioner")

	// The key authenticates the tenant at once, and is never shown again.
	code, body = a.do(http.MethodGet, "/api/v1/me", key, nil)
	require.Equal(t, http.StatusOK, code, "%v", body)
	code, body = a.do(http.MethodGet, fmt.Sprintf("/api/v1/tenant/%d/status", envID), adminToken, nil)
	require.Equal(t, http.StatusOK, code)
	require.NotContains(t, tenantOfBody(t, body), "apiKey")

	// The provisioner queued the spawn with its provisioning fact; the key went to the API
	// sealed, and travels in no event.
	rows, err := a.Pool.Query(t.Context(), `SELECT subject, payload FROM provisioner.outbox ORDER BY id`)
	require.NoError(t, err)
	var subjects []string
	var envs []events.Envelope
	for rows.Next() {
		var subject string
		var payload []byte
		require.NoError(t, rows.Scan(&subject, &payload))
		var env events.Envelope
		require.NoError(t, json.Unmarshal(payload, &env))
		subjects = append(subjects, subject)
		envs = append(envs, env)
	}
	require.NoError(t, rows.Err())
	require.Equal(t, []string{events.SubjectTenantSpawn, events.KeyIssuedSubject(envID), events.LifecycleSubject(events.StateProvisioning, envID)}, subjects)
	cmd, err := events.DataAs[events.TenantSpawn](envs[0])
	require.NoError(t, err)
	require.Equal(t, events.TenantSpawn{EnvID: envID, OrgID: 1, Name: "acme-corp-ai", Image: tenanttemplates.GoImage, Port: 3001, Generation: 1,
		Limits: events.Limits{MemoryBytes: 64 << 20, NanoCPUs: 1e9, PIDs: 100}, Egress: events.EgressPlatform}, cmd)
	issued, err := events.DataAs[events.TenantKeyIssued](envs[1])
	require.NoError(t, err)
	require.Equal(t, apikey.Digest(key), issued.KeyDigest, "the key's digest goes to the API as a fact")
	for _, env := range envs {
		require.NotContains(t, string(env.Data), key[len(apikey.Prefix):], "the key never travels in an event")
	}
	fact, err := events.DataAs[events.TenantLifecycle](envs[2])
	require.NoError(t, err)
	require.Equal(t, events.StateProvisioning, fact.State)
	require.NotEmpty(t, envs[0].RequestID)
	require.Equal(t, envs[0].RequestID, envs[2].RequestID)
}

func TestSpawn_SyncWithNoProvisionerRunning_202StillProvisioningAfterWait(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t)
	a.startProvisioner()
	code, body := a.do(http.MethodPost, "/api/v1/tenant/spawn?wait=1s", adminToken, map[string]any{"name": "patient"})
	require.Equal(t, http.StatusAccepted, code, "%v", body)
	require.Equal(t, "provisioning", tenantOfBody(t, body)["status"])
	require.Contains(t, body["message"], "still provisioning after 1s")
}

func TestSpawn_SameNameInOrg_409_ElsewhereOrAfterDestroyFine(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t)
	a.startProvisioner()
	spawn := func(body map[string]any) (int, map[string]any) {
		return a.do(http.MethodPost, "/api/v1/tenant/spawn?async=true", adminToken, body)
	}
	// Two at once: exactly one wins.
	codes := make([]int, 2)
	var wg sync.WaitGroup
	for i := range codes {
		wg.Go(func() { codes[i], _ = spawn(map[string]any{"name": "twin"}) })
	}
	wg.Wait()
	require.ElementsMatch(t, []int{http.StatusAccepted, http.StatusConflict}, codes)

	code, body := spawn(map[string]any{"name": "twin"})
	require.Equal(t, http.StatusConflict, code)
	require.Equal(t, "conflict", errorCode(body))
	require.Contains(t, errorMessage(body), `a tenant named "twin" already exists in organization 1`)

	code, body = a.do(http.MethodPost, "/api/v1/orgs", adminToken, map[string]any{"name": "other"})
	require.Equal(t, http.StatusCreated, code, "%v", body)
	other := body["organization"].(map[string]any)["orgId"]
	code, _ = spawn(map[string]any{"name": "twin", "orgId": other})
	require.Equal(t, http.StatusAccepted, code, "names are unique per organization")

	_, err := a.Pool.Exec(t.Context(), `UPDATE environments SET status = 'destroyed' WHERE name = 'twin' AND org_id = 1`)
	require.NoError(t, err)
	code, _ = spawn(map[string]any{"name": "twin"})
	require.Equal(t, http.StatusAccepted, code, "a destroyed tenant's name is free again")
}

func TestSpawn_OrgFullOrUnknown_ProvisionerNeverStarted_PortsExhausted(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t)
	spawn := func(body map[string]any) (int, map[string]any) {
		return a.do(http.MethodPost, "/api/v1/tenant/spawn?async=true", adminToken, body)
	}
	code, body := spawn(map[string]any{"name": "early"})
	require.Equal(t, http.StatusServiceUnavailable, code, "%v", body)
	require.Equal(t, "provisioner_unavailable", errorCode(body))
	require.Contains(t, errorMessage(body), "start the provisioner")

	a.startProvisioner()
	code, body = spawn(map[string]any{"name": "nowhere", "orgId": 999})
	require.Equal(t, http.StatusNotFound, code)
	require.Contains(t, errorMessage(body), "organization 999")

	code, body = a.do(http.MethodPost, "/api/v1/orgs", adminToken, map[string]any{"name": "tiny", "maxTenants": 1})
	require.Equal(t, http.StatusCreated, code, "%v", body)
	tiny := body["organization"].(map[string]any)["orgId"]
	code, _ = spawn(map[string]any{"name": "one", "orgId": tiny})
	require.Equal(t, http.StatusAccepted, code)
	code, body = spawn(map[string]any{"name": "two", "orgId": tiny})
	require.Equal(t, http.StatusForbidden, code)
	require.Equal(t, "quota_exceeded", errorCode(body))
	require.Contains(t, errorMessage(body), `has 1 tenants, its quota on plan "free"; destroy one, or raise the quota with PATCH /api/v1/orgs/`)

	_, err := a.Pool.Exec(t.Context(), `DELETE FROM tenant_ports WHERE env_id IS NULL`)
	require.NoError(t, err)
	code, header, body := a.raw(http.MethodPost, "/api/v1/tenant/spawn?async=true", map[string]any{"name": "crowded"})
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Equal(t, "no_free_port", errorCode(body))
	require.Equal(t, "30", header.Get("Retry-After"))
	var n int
	require.NoError(t, a.Pool.QueryRow(t.Context(), `SELECT count(*) FROM environments WHERE name = 'crowded'`).Scan(&n))
	require.Zero(t, n, "a refused spawn records nothing")
}

// raw is do with the admin token that also returns the answer's headers; a body that is not
// JSON is returned under "text".
func (a *testAPI) raw(method, path string, body any) (int, http.Header, map[string]any) {
	a.t.Helper()
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		require.NoError(a.t, err)
		r = strings.NewReader(string(b))
	}
	req, err := http.NewRequestWithContext(a.t.Context(), method, a.URL+path, r)
	require.NoError(a.t, err)
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(a.t, err)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	require.NoError(a.t, err)
	var out map[string]any
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		require.NoError(a.t, json.Unmarshal(raw, &out))
	} else {
		out = map[string]any{"text": string(raw)}
	}
	return resp.StatusCode, resp.Header, out
}

func TestTenantEndpoints_NoOrWrongAdminToken_401(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t)
	id, tenantKey := a.insertTenant("acme", "running")
	p := "/api/v1/tenant/" + strconv.FormatInt(id, 10)
	for _, r := range []struct{ method, path string }{
		{http.MethodPost, "/api/v1/tenant/spawn"},
		{http.MethodGet, "/api/v1/tenant"},
		{http.MethodGet, p + "/status"},
		{http.MethodGet, p + "/logs"},
		{http.MethodDelete, p},
		{http.MethodPost, "/api/v1/orgs"},
		{http.MethodGet, "/api/v1/orgs"},
		{http.MethodGet, "/api/v1/orgs/1"},
	} {
		for name, tok := range map[string]string{"none": "", "wrong": "not-the-admin-token-at-all", "tenant key": tenantKey} {
			code, body := a.do(r.method, r.path, tok, map[string]any{"name": "x"})
			require.Equal(t, http.StatusUnauthorized, code, "%s %s with %s token", r.method, r.path, name)
			require.Equal(t, "unauthorized", errorCode(body))
		}
	}
	var status string
	require.NoError(t, a.Pool.QueryRow(t.Context(), `SELECT desired_status FROM environments WHERE id = $1`, id).Scan(&status))
	require.Equal(t, "running", status, "no unauthenticated destroy")
}

func TestTenantEndpoints_UnknownEnvID_404_MalformedEnvID_400(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t)
	a.startProvisioner()
	for _, r := range []struct{ method, path string }{
		{http.MethodGet, "/api/v1/tenant/424242/status"},
		{http.MethodGet, "/api/v1/tenant/424242/logs"},
		{http.MethodDelete, "/api/v1/tenant/424242"},
	} {
		code, body := a.do(r.method, r.path, adminToken, nil)
		require.Equal(t, http.StatusNotFound, code, "%s %s", r.method, r.path)
		require.Equal(t, "not_found", errorCode(body))
		require.Contains(t, errorMessage(body), "tenant 424242 not found")
	}
	for _, id := range []string{"abc", "0", "-3", "99999999999999999999"} {
		code, body := a.do(http.MethodGet, "/api/v1/tenant/"+id+"/status", adminToken, nil)
		require.Equal(t, http.StatusBadRequest, code, id)
		require.Contains(t, errorMessage(body), "use the positive integer the spawn answered with")
	}
}

func TestStatus_DestroyedTenant_ShowsDestroyed_LiveTenantWithoutProvisioner_SaysSo(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t)
	a.startProvisioner()
	gone, _ := a.insertTenant("gone", "destroyed")
	code, body := a.do(http.MethodGet, fmt.Sprintf("/api/v1/tenant/%d/status", gone), adminToken, nil)
	require.Equal(t, http.StatusOK, code)
	tn := tenantOfBody(t, body)
	require.Equal(t, "destroyed", tn["status"])
	require.NotContains(t, tn, "container")
	require.NotContains(t, tn, "containerError", "a destroyed tenant has no container to ask about")

	alive, _ := a.insertTenant("alive", "running")
	code, body = a.do(http.MethodGet, fmt.Sprintf("/api/v1/tenant/%d/status", alive), adminToken, nil)
	require.Equal(t, http.StatusOK, code)
	tn = tenantOfBody(t, body)
	require.Equal(t, "running", tn["status"])
	require.Contains(t, tn["containerError"], "no provisioner answered")
}

func TestDestroy_Async_202MarksCommandsAndRevokesKeyAtOnce_DestroyedTenant_200AtOnce(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t)
	a.startProvisioner()
	id, key := a.insertTenant("doomed", "running")
	code, _ := a.do(http.MethodGet, "/api/v1/me", key, nil)
	require.Equal(t, http.StatusOK, code)
	code, body := a.do(http.MethodDelete, fmt.Sprintf("/api/v1/tenant/%d?async=true", id), adminToken, nil)
	require.Equal(t, http.StatusAccepted, code, "%v", body)
	tn := tenantOfBody(t, body)
	require.Equal(t, "running", tn["status"], "the provisioner has not done it yet")
	code, _ = a.do(http.MethodGet, "/api/v1/me", key, nil)
	require.Equal(t, http.StatusUnauthorized, code, "the key stops working before the container is gone")
	require.Equal(t, "destroyed", tn["desiredStatus"])
	var n int
	require.NoError(t, a.Pool.QueryRow(t.Context(), `SELECT count(*) FROM outbox WHERE subject = $1`, events.SubjectTenantDestroy).Scan(&n))
	require.Equal(t, 1, n)

	gone, _ := a.insertTenant("gone", "destroyed")
	code, body = a.do(http.MethodDelete, fmt.Sprintf("/api/v1/tenant/%d", gone), adminToken, nil)
	require.Equal(t, http.StatusOK, code, "%v", body)
	require.Equal(t, "destroyed", tenantOfBody(t, body)["status"])
}

func TestLogs_DestroyedTenant_ArchivedLastLines_BadParams_400(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t)
	a.startProvisioner()
	id, _ := a.insertTenant("gone", "destroyed")
	_, err := a.Pool.Exec(t.Context(), `INSERT INTO tenant_logs (env_id, cause, exit_code, logs) VALUES ($1, 'destroyed', 0, $2)`,
		id, []byte("one\ntwo\nthree\n"))
	require.NoError(t, err)
	code, header, body := a.raw(http.MethodGet, fmt.Sprintf("/api/v1/tenant/%d/logs?tail=2", id), nil)
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "archive", header.Get("X-Log-Source"))
	require.Equal(t, "two\nthree\n", body["text"])

	for q, want := range map[string]string{
		"tail=0":         "tail \"0\" is not valid: use a number of lines from 1 to 10000",
		"tail=x":         "use a number of lines",
		"since=tomorrow": "use an RFC 3339 time such as 2024-01-15T10:00:00Z, or a duration back from now such as 15m",
		"follow=yes":     `follow "yes" is not valid`,
	} {
		code, body := a.do(http.MethodGet, fmt.Sprintf("/api/v1/tenant/%d/logs?%s", id, q), adminToken, nil)
		require.Equal(t, http.StatusBadRequest, code, q)
		require.Contains(t, errorMessage(body), want, q)
	}

	alive, _ := a.insertTenant("alive", "running")
	code, body = a.do(http.MethodGet, fmt.Sprintf("/api/v1/tenant/%d/logs", alive), adminToken, nil)
	require.Equal(t, http.StatusServiceUnavailable, code, "%v", body)
	require.Contains(t, errorMessage(body), "provisioner")
}

func TestList_FilterByOrgAndStatus_PagesWithCursor(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t)
	a.startProvisioner()
	var ids []int64
	for i, st := range []string{"running", "running", "error", "destroyed", "running"} {
		id, _ := a.insertTenant("t"+strconv.Itoa(i), st)
		ids = append(ids, id)
	}
	code, body := a.do(http.MethodPost, "/api/v1/orgs", adminToken, map[string]any{"name": "other"})
	require.Equal(t, http.StatusCreated, code)
	other := int64(body["organization"].(map[string]any)["orgId"].(float64))
	_, err := a.Pool.Exec(t.Context(), `UPDATE environments SET org_id = $1 WHERE id = $2`, other, ids[4])
	require.NoError(t, err)

	list := func(q string) ([]int64, any) {
		code, body := a.do(http.MethodGet, "/api/v1/tenant"+q, adminToken, nil)
		require.Equal(t, http.StatusOK, code, "%s: %v", q, body)
		var got []int64
		for _, tn := range body["tenants"].([]any) {
			got = append(got, int64(tn.(map[string]any)["envId"].(float64)))
		}
		return got, body["nextCursor"]
	}
	got, next := list("")
	require.Equal(t, []int64{ids[4], ids[2], ids[1], ids[0]}, got, "newest first, destroyed left out")
	require.Nil(t, next)
	got, _ = list("?status=all")
	require.Len(t, got, 5)
	got, _ = list("?status=destroyed,error")
	require.Equal(t, []int64{ids[3], ids[2]}, got)
	got, _ = list("?orgId=" + strconv.FormatInt(other, 10))
	require.Equal(t, []int64{ids[4]}, got)
	got, _ = list("?orgId=1&status=running")
	require.Equal(t, []int64{ids[1], ids[0]}, got)

	var all []int64
	q := "?limit=2&status=all"
	for {
		page, next := list(q)
		require.LessOrEqual(t, len(page), 2)
		all = append(all, page...)
		if next == nil {
			break
		}
		q = "?limit=2&status=all&cursor=" + next.(string)
	}
	require.Equal(t, []int64{ids[4], ids[3], ids[2], ids[1], ids[0]}, all)

	for q, want := range map[string]string{
		"?status=sleeping": `status "sleeping" is not valid: use a comma list of provisioning, running, unhealthy, stopped, error, destroyed, or all`,
		"?limit=0":         "limit \"0\" is not valid: use 1 to 200",
		"?limit=201":       "use 1 to 200",
		"?cursor=garbage!": "pass the nextCursor of the previous page as it is",
		"?orgId=x":         "orgId \"x\" is not valid",
	} {
		code, body := a.do(http.MethodGet, "/api/v1/tenant"+q, adminToken, nil)
		require.Equal(t, http.StatusBadRequest, code, q)
		require.Contains(t, errorMessage(body), want, q)
	}
}

func TestSpawn_APIStoppedBeforeRecordingTheKey_KeyWorksFromTheProvisionersFact(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t)
	a.startProvisioner()
	// An admission whose answer never reached the API's database, as when the API stops
	// between the provisioner's answer and its own write.
	recv, err := apikey.NewReceiver()
	require.NoError(t, err)
	adm, err := natsrpc.Call[events.TenantAdmission, events.TenantAdmitted](t.Context(), a.NC, events.SubjectTenantAdmit,
		events.TenantAdmission{OrgID: 1, MaxTenants: 10, Name: "orphan-key", Image: tenanttemplates.GoImage, ReplyKey: recv.PublicKey(),
			Limits: events.Limits{MemoryBytes: 64 << 20, NanoCPUs: 5e8, PIDs: 64}})
	require.NoError(t, err)
	key, err := recv.Open(adm.Tenant.EnvID, adm.SealedKey)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		code, _ := a.do(http.MethodGet, "/api/v1/me", key, nil)
		return code == http.StatusOK
	}, 10*time.Second, 20*time.Millisecond, "the key authenticates once the API has the provisioner's fact")

	// A destroy revokes it, and the fact arriving again does not bring it back.
	code, _ := a.do(http.MethodDelete, fmt.Sprintf("/api/v1/tenant/%d?async=true", adm.Tenant.EnvID), adminToken, nil)
	require.Equal(t, http.StatusAccepted, code)
	code, _ = a.do(http.MethodGet, "/api/v1/me", key, nil)
	require.Equal(t, http.StatusUnauthorized, code)
}
