package api_test

import (
	"fmt"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/convergence-dev/convergence/internal/pgrole"
)

// audit reads the audit log with query, and returns its entries.
func (a *testAPI) audit(query string) []map[string]any {
	a.t.Helper()
	code, body := a.do(http.MethodGet, "/api/v1/audit"+query, adminToken, nil)
	require.Equal(a.t, http.StatusOK, code, "%v", body)
	var out []map[string]any
	for _, e := range body["entries"].([]any) {
		out = append(out, e.(map[string]any))
	}
	return out
}

func actions(entries []map[string]any) []string {
	var out []string
	for _, e := range entries {
		out = append(out, fmt.Sprintf("%s %v", e["action"], e["status"]))
	}
	return out
}

func TestAudit_OperatorAndKeyActions_WhoWhatWhereOutcome_Filtered_AppendOnly(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t)
	a.startProvisioner()

	code, body := a.do(http.MethodPost, "/api/v1/orgs", adminToken, map[string]any{"name": "audited"})
	require.Equal(t, http.StatusCreated, code, "%v", body)
	orgID := int64(body["organization"].(map[string]any)["orgId"].(float64))
	code, _ = a.do(http.MethodPost, "/api/v1/orgs", adminToken, map[string]any{"name": "audited"})
	require.Equal(t, http.StatusConflict, code)
	code, body = a.do(http.MethodPost, "/api/v1/tenant/spawn?async=true", adminToken, map[string]any{"name": "audited-app", "orgId": orgID})
	require.Equal(t, http.StatusAccepted, code, "%v", body)
	tn := tenantOfBody(t, body)
	envID := int64(tn["envId"].(float64))
	keysPath := fmt.Sprintf("/api/v1/tenant/%d/keys", envID)
	code, body = a.do(http.MethodPost, keysPath, adminToken, map[string]any{"overlapSeconds": 0})
	require.Equal(t, http.StatusCreated, code, "%v", body)
	newKeyID := keyID(body["key"])
	code, _ = a.do(http.MethodDelete, keysPath+"/abc", adminToken, nil)
	require.Equal(t, http.StatusBadRequest, code)
	code, _ = a.do(http.MethodDelete, fmt.Sprintf("%s/%d", keysPath, newKeyID), adminToken, nil)
	require.Equal(t, http.StatusOK, code)
	code, _ = a.do(http.MethodDelete, fmt.Sprintf("/api/v1/tenant/%d?async=true", envID), adminToken, nil)
	require.Equal(t, http.StatusAccepted, code)
	code, _ = a.do(http.MethodGet, "/api/v1/tenant", adminToken, nil)
	require.Equal(t, http.StatusOK, code, "reads are not audited")

	all := a.audit("")
	require.Equal(t, []string{"tenant.destroy 202", "key.revoke 200", "key.revoke 400", "key.issue 201",
		"tenant.spawn 202", "org.create 409", "org.create 201"}, actions(all), "newest first")
	revoke := all[1]
	require.Regexp(t, `^admin:[0-9a-f]{12}$`, revoke["actor"])
	require.NotContains(t, revoke["actor"], adminToken[:12])
	require.Equal(t, "127.0.0.1", revoke["client"])
	require.NotEmpty(t, revoke["requestId"])
	require.Equal(t, fmt.Sprintf("key %d of tenant %d of organization %d", newKeyID, envID, orgID), revoke["target"])
	require.Equal(t, "ok", revoke["outcome"])
	require.InDelta(t, envID, revoke["envId"], 0)
	require.InDelta(t, orgID, revoke["orgId"], 0)
	require.Equal(t, "invalid_request", all[2]["outcome"])
	require.Equal(t, fmt.Sprintf("tenant %d", envID), all[2]["target"])
	require.Equal(t, fmt.Sprintf("key %d of tenant %d of organization %d", newKeyID, envID, orgID), all[3]["target"])
	require.Equal(t, fmt.Sprintf("tenant %d of organization %d", envID, orgID), all[4]["target"])
	require.Equal(t, "conflict", all[5]["outcome"])
	require.Equal(t, "none", all[5]["target"], "the refused create named no organization")
	require.Equal(t, fmt.Sprintf("organization %d", orgID), all[6]["target"])
	at, err := time.Parse(time.RFC3339Nano, all[0]["at"].(string))
	require.NoError(t, err)
	require.WithinDuration(t, time.Now(), at, time.Minute)

	require.Equal(t, []string{"tenant.destroy 202", "key.revoke 200", "key.revoke 400", "key.issue 201", "tenant.spawn 202"},
		actions(a.audit("?envId="+strconv.FormatInt(envID, 10))))
	require.Equal(t, []string{"tenant.destroy 202", "key.revoke 200", "key.issue 201", "tenant.spawn 202", "org.create 201"},
		actions(a.audit("?orgId="+strconv.FormatInt(orgID, 10))))
	require.Equal(t, []string{"key.revoke 200", "key.revoke 400"}, actions(a.audit("?action=key.revoke")))
	require.Empty(t, a.audit("?from="+time.Now().Add(time.Hour).UTC().Format(time.RFC3339)))
	require.Len(t, a.audit("?from="+time.Now().UTC().Format(time.DateOnly)+"&to="+time.Now().Add(48*time.Hour).UTC().Format(time.DateOnly)), 7)

	code, body = a.do(http.MethodGet, "/api/v1/audit?limit=3", adminToken, nil)
	require.Equal(t, http.StatusOK, code)
	require.Len(t, body["entries"], 3)
	code, body = a.do(http.MethodGet, "/api/v1/audit?limit=3&cursor="+body["nextCursor"].(string), adminToken, nil)
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "key.issue", body["entries"].([]any)[0].(map[string]any)["action"])

	for query, want := range map[string]string{
		"?action=nope":                   `action "nope" is not known`,
		"?envId=-1":                      `envId "-1" is not valid`,
		"?from=yesterday":                `from "yesterday" is not valid`,
		"?from=2026-12-02&to=2026-12-01": "from must be before to",
		"?limit=0":                       `limit "0" is not valid`,
		"?orgId=x&action=y":              `usage.repair, budget.set, invoice.create, invoice.finalize; orgId "x" is not valid`,
	} {
		code, body := a.do(http.MethodGet, "/api/v1/audit"+query, adminToken, nil)
		require.Equal(t, http.StatusBadRequest, code, query)
		require.Contains(t, errorMessage(body), want, query)
	}
	_, key := a.insertTenant("not-an-operator", "running")
	code, _ = a.do(http.MethodGet, "/api/v1/audit", key, nil)
	require.Equal(t, http.StatusUnauthorized, code)

	// Append-only: the API's role may not change or remove an entry, and no role may.
	apiPool := a.db.For(t, pgrole.API)
	for _, stmt := range []string{`UPDATE audit_log SET outcome = 'ok'`, `DELETE FROM audit_log`, `TRUNCATE audit_log`} {
		_, err := apiPool.Exec(t.Context(), stmt)
		require.ErrorContains(t, err, "permission denied", stmt)
		_, err = a.Pool.Exec(t.Context(), stmt)
		require.ErrorContains(t, err, "the audit log is append-only", stmt)
	}
	require.Len(t, a.audit(""), 7)
}
