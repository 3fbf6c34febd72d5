package api_test

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestOrgs_CreateGetList(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t)
	code, body := a.do(http.MethodPost, "/api/v1/orgs", adminToken, map[string]any{"name": "acme", "plan": "pro", "maxTenants": 5})
	require.Equal(t, http.StatusCreated, code, "%v", body)
	org := body["organization"].(map[string]any)
	require.Equal(t, "acme", org["name"])
	require.Equal(t, "pro", org["plan"])
	require.InDelta(t, 5, org["maxTenants"], 0, "its own quota, in place of the plan's 25")
	require.InDelta(t, 5, org["maxTenantsOverride"], 0)
	require.InDelta(t, 0, org["liveTenants"], 0)
	limits := org["limits"].(map[string]any)
	require.InDelta(t, 5, limits["maxTenants"], 0)
	require.InDelta(t, 120, limits["requestsPerMinute"], 0, "the pro plan's")
	require.Equal(t, []any{"*"}, limits["models"])
	require.Equal(t, "500.000000", limits["monthlySpendLimit"])
	id := int64(org["orgId"].(float64))

	code, body = a.do(http.MethodPost, "/api/v1/orgs", adminToken, map[string]any{"name": "acme"})
	require.Equal(t, http.StatusConflict, code)
	require.Contains(t, errorMessage(body), `an organization named "acme" already exists`)

	_, err := a.Pool.Exec(t.Context(), `INSERT INTO tenant_keys (digest, env_id, org_id, name, prefix, revoked_at, revoked_reason)
		VALUES ('a', 10, $1, 'a', 'sk_tenant_a', NULL, NULL), ('b', 11, $1, 'b', 'sk_tenant_b', now(), 'destroyed'),
			('c', 12, $1, 'c', 'sk_tenant_c', now(), 'revoked')`, id)
	require.NoError(t, err)
	code, body = a.do(http.MethodGet, "/api/v1/orgs/"+strconv.FormatInt(id, 10), adminToken, nil)
	require.Equal(t, http.StatusOK, code)
	require.InDelta(t, 2, body["organization"].(map[string]any)["liveTenants"], 0, "a tenant whose key an operator revoked still lives")

	code, body = a.do(http.MethodGet, "/api/v1/orgs", adminToken, nil)
	require.Equal(t, http.StatusOK, code)
	orgs := body["organizations"].([]any)
	require.Len(t, orgs, 2)
	def := orgs[0].(map[string]any)
	require.Equal(t, "default", def["name"], "the default organization exists")
	require.Equal(t, "unlimited", def["plan"], "on the plan without limits of its own")
	require.InDelta(t, 100, def["maxTenants"], 0, "with the quota it always had")
	require.Nil(t, def["limits"].(map[string]any)["monthlySpendLimit"])

	code, body = a.do(http.MethodGet, "/api/v1/orgs?limit=1", adminToken, nil)
	require.Equal(t, http.StatusOK, code)
	require.Len(t, body["organizations"], 1)
	code, body = a.do(http.MethodGet, "/api/v1/orgs?limit=1&cursor="+body["nextCursor"].(string), adminToken, nil)
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "acme", body["organizations"].([]any)[0].(map[string]any)["name"])
	require.Nil(t, body["nextCursor"])
}

func TestOrgs_BadInput_400SaysWhatIsValid_Unknown404(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t)
	for _, tt := range []struct {
		body map[string]any
		want string
	}{
		{map[string]any{"name": "Acme Inc"}, `name "Acme Inc" is not valid: use 1-63 lowercase letters, digits and '-'`},
		{map[string]any{"name": "acme", "plan": "gold"}, `plan "gold" is not valid: use one of enterprise, free, pro, unlimited (default free)`},
		{map[string]any{"name": "acme", "maxTenants": -1}, "maxTenants -1 is out of range: use 0 to 10000, or leave it out for the plan's"},
		{map[string]any{"name": "acme", "owner": "me"}, `unknown field "owner"`},
	} {
		code, body := a.do(http.MethodPost, "/api/v1/orgs", adminToken, tt.body)
		require.Equal(t, http.StatusBadRequest, code, "%v", tt.body)
		require.Contains(t, errorMessage(body), tt.want)
	}
	code, body := a.do(http.MethodGet, "/api/v1/orgs/777", adminToken, nil)
	require.Equal(t, http.StatusNotFound, code)
	require.Contains(t, errorMessage(body), "organization 777 not found")
	code, body = a.do(http.MethodGet, "/api/v1/orgs/acme", adminToken, nil)
	require.Equal(t, http.StatusBadRequest, code)
	require.Contains(t, errorMessage(body), "use the positive integer id of an organization")
}

func TestOrgs_Update_PlanAndQuota_QuotaBelowLiveTenantsSaysSo_BadInput(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t)
	code, body := a.do(http.MethodPost, "/api/v1/orgs", adminToken, map[string]any{"name": "growing"})
	require.Equal(t, http.StatusCreated, code, "%v", body)
	org := body["organization"].(map[string]any)
	path := fmt.Sprintf("/api/v1/orgs/%d", int64(org["orgId"].(float64)))

	require.Equal(t, "free", org["plan"], "a new organization's plan")
	require.InDelta(t, 3, org["maxTenants"], 0, "the free plan's quota")
	require.Nil(t, org["maxTenantsOverride"])

	code, body = a.do(http.MethodPatch, path, adminToken, map[string]any{"maxTenants": 7})
	require.Equal(t, http.StatusOK, code, "%v", body)
	code, body = a.do(http.MethodPatch, path, adminToken, map[string]any{"plan": "pro"})
	require.Equal(t, http.StatusOK, code, "%v", body)
	updated := body["organization"].(map[string]any)
	require.Equal(t, "pro", updated["plan"])
	require.InDelta(t, 7, updated["maxTenants"], 0, "a field left out is kept")
	require.NotEqual(t, org["updatedAt"], updated["updatedAt"])
	code, body = a.do(http.MethodPatch, path, adminToken, map[string]any{"maxTenants": nil})
	require.Equal(t, http.StatusOK, code, "%v", body)
	require.InDelta(t, 25, body["organization"].(map[string]any)["maxTenants"], 0, "null drops the organization's own quota: the pro plan's applies")

	_, err := a.Pool.Exec(t.Context(), `INSERT INTO tenant_keys (digest, env_id, org_id, name, prefix) VALUES ('g1', 20, $1, 'g1', 'sk_tenant_g'), ('g2', 21, $1, 'g2', 'sk_tenant_h')`,
		int64(org["orgId"].(float64)))
	require.NoError(t, err)
	code, body = a.do(http.MethodPatch, path, adminToken, map[string]any{"maxTenants": 1})
	require.Equal(t, http.StatusOK, code, "%v", body)
	require.InDelta(t, 1, body["organization"].(map[string]any)["maxTenants"], 0)
	require.Contains(t, body["message"], "has 2 live tenants, more than its new quota of 1")

	for _, tt := range []struct {
		body map[string]any
		want string
	}{
		{map[string]any{}, "nothing to change"},
		{map[string]any{"plan": "gold", "maxTenants": 20000}, `(default free); maxTenants 20000 is out of range`},
		{map[string]any{"maxTenants": "many"}, `maxTenants`},
		{map[string]any{"name": "renamed"}, `unknown field "name"`},
	} {
		code, body := a.do(http.MethodPatch, path, adminToken, tt.body)
		require.Equal(t, http.StatusBadRequest, code, "%v", tt.body)
		require.Contains(t, errorMessage(body), tt.want)
	}
	code, _ = a.do(http.MethodPatch, "/api/v1/orgs/777", adminToken, map[string]any{"plan": "pro"})
	require.Equal(t, http.StatusNotFound, code)

	entries := a.audit("?action=org.update")
	require.Len(t, entries, 9, "every update asked for is audited, refused ones too")
	require.Equal(t, "not_found", entries[0]["outcome"])
	require.Equal(t, "ok", entries[len(entries)-1]["outcome"])
}

func TestOrgs_CreateWithIdempotencyKey_RetriesGetTheFirstAnswer_OtherBody422(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t)
	create := func(key string, body map[string]any) (int, map[string]any, bool) {
		return a.withKey(http.MethodPost, "/api/v1/orgs", key, body)
	}

	// Concurrent retries under one key: one organization, every answer the first one.
	const retries = 8
	answers := make(chan map[string]any, retries)
	var wg sync.WaitGroup
	for range retries {
		wg.Go(func() {
			code, body, _ := create("org-key-1", map[string]any{"name": "idem", "plan": "pro"})
			assert.Equal(t, http.StatusCreated, code, "%v", body)
			answers <- body
		})
	}
	wg.Wait()
	close(answers)
	var first map[string]any
	for body := range answers {
		if first == nil {
			first = body
		}
		require.Equal(t, first, body, "every retry gets the first answer")
	}
	code, _, replayed := create("org-key-1", map[string]any{"plan": "pro", "name": "idem"})
	require.Equal(t, http.StatusCreated, code)
	require.True(t, replayed)
	var n int
	require.NoError(t, a.Pool.QueryRow(t.Context(), `SELECT count(*) FROM organizations WHERE name = 'idem'`).Scan(&n))
	require.Equal(t, 1, n)
	require.Len(t, a.audit("?action=org.create"), retries+1, "each request is audited; one made the organization")

	// The key with another request is refused; without a key the name is taken as before.
	code, body, _ := create("org-key-1", map[string]any{"name": "idem", "plan": "enterprise"})
	require.Equal(t, http.StatusUnprocessableEntity, code)
	require.Equal(t, "idempotency_key_reused", errorCode(body))
	code, body = a.do(http.MethodPost, "/api/v1/orgs", adminToken, map[string]any{"name": "idem"})
	require.Equal(t, http.StatusConflict, code, "%v", body)
	code, body, _ = create(strings.Repeat("k", 256), map[string]any{"name": "other"})
	require.Equal(t, http.StatusBadRequest, code)
	require.Contains(t, errorMessage(body), "Idempotency-Key: use 1 to 255 printable ASCII characters")
}
