package api_test

import (
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestAdminAuth(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t)
	tests := []struct {
		name  string
		token string
		want  int
	}{
		{"no token", "", http.StatusUnauthorized},
		{"wrong token", "not-the-admin-token-at-all", http.StatusUnauthorized},
		{"admin token", adminToken, http.StatusOK},
	}
	for _, tt := range tests {
		code, body := a.do(http.MethodGet, "/api/v1/whoami", tt.token, nil)
		require.Equal(t, tt.want, code, tt.name)
		if tt.want == http.StatusUnauthorized {
			require.Equal(t, "unauthorized", errorCode(body))
			require.Equal(t, false, body["success"])
		}
	}
}

func TestTenantAuth_KeyOfLiveTenantAdmitted_DestroyedOrUnknownRefused(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t)
	id, key := a.insertTenant("acme", "running")
	_, goneKey := a.insertTenant("gone", "destroyed")
	_, otherKey := a.insertTenant("unused", "running")
	_, err := a.Pool.Exec(t.Context(), `DELETE FROM tenant_keys WHERE name = 'unused'`)
	require.NoError(t, err)

	code, body := a.do(http.MethodGet, "/api/v1/me", key, nil)
	require.Equal(t, http.StatusOK, code)
	require.InDelta(t, float64(id), body["envId"], 0)

	for name, tok := range map[string]string{
		"destroyed tenant": goneKey,
		"unknown key":      otherKey,
		"malformed":        "sk_tenant_short",
		"admin token":      adminToken,
		"none":             "",
	} {
		code, body := a.do(http.MethodGet, "/api/v1/me", tok, nil)
		require.Equal(t, http.StatusUnauthorized, code, name)
		require.Equal(t, "unauthorized", errorCode(body), name)
	}
}

func TestBodyLimit_OversizeBody_413(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t)
	big := map[string]string{"prompt": string(make([]byte, 2<<20))}
	code, body := a.do(http.MethodPost, "/api/v1/whoami", adminToken, big)
	require.Equal(t, http.StatusRequestEntityTooLarge, code)
	require.Equal(t, "too_large", errorCode(body))
}
