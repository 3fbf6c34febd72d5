package api_test

import (
	"fmt"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/convergence-dev/convergence/internal/apikey"
)

// me calls GET /api/v1/me with key and returns the status and the id of the key it was
// admitted with.
func (a *testAPI) me(key string) (int, int64) {
	a.t.Helper()
	code, body := a.do(http.MethodGet, "/api/v1/me", key, nil)
	id, _ := body["keyId"].(float64)
	return code, int64(id)
}

func keyID(k any) int64 { return int64(k.(map[string]any)["id"].(float64)) }

func TestKeys_RotateWithOverlap_RotateWithout_Revoke(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t)
	sealing := a.startProvisioner()
	envID, first := a.insertTenant("keys", "running")
	keysPath := fmt.Sprintf("/api/v1/tenant/%d/keys", envID)

	code, body := a.do(http.MethodGet, keysPath, adminToken, nil)
	require.Equal(t, http.StatusOK, code, "%v", body)
	require.Len(t, body["keys"], 1)
	k := body["keys"].([]any)[0].(map[string]any)
	require.Equal(t, apikey.Display(first), k["prefix"])
	require.Equal(t, true, k["active"])
	require.Nil(t, k["lastUsedAt"])
	require.NotContains(t, k, "apiKey", "a listed key never shows its secret")
	firstID := keyID(k)
	code, id := a.me(first)
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, firstID, id)

	// A rotation with an hour's overlap: the new key is shown once, the old one gets an expiry
	// and works until then.
	before := time.Now()
	code, body = a.do(http.MethodPost, keysPath, adminToken, map[string]any{"overlapSeconds": 3600})
	require.Equal(t, http.StatusCreated, code, "%v", body)
	added := body["key"].(map[string]any)
	second, _ := added["apiKey"].(string)
	require.True(t, apikey.WellFormed(second), "the answer shows the new key: %v", added)
	require.Equal(t, false, body["delivered"], "the tenant has no container to deliver to")
	replaced := body["replacedKeys"].([]any)
	require.Len(t, replaced, 1)
	require.Equal(t, firstID, keyID(replaced[0]))
	expires, err := time.Parse(time.RFC3339Nano, replaced[0].(map[string]any)["expiresAt"].(string))
	require.NoError(t, err)
	require.WithinDuration(t, before.Add(time.Hour), expires, time.Minute)

	code, id = a.me(first)
	require.Equal(t, http.StatusOK, code, "the replaced key works during the overlap")
	require.Equal(t, firstID, id)
	_, whoami := a.do(http.MethodGet, "/api/v1/me", first, nil)
	require.Equal(t, replaced[0].(map[string]any)["expiresAt"], whoami["keyExpiresAt"], "a tenant sees when its key stops working")
	code, id = a.me(second)
	require.Equal(t, http.StatusOK, code)
	secondID := keyID(added)
	require.Equal(t, secondID, id)

	// The provisioner sealed the new key for the tenant's container, and with no container to
	// put it in, nothing waits for delivery.
	sealed, err := sealing.OpenFor(t.Context(), a.Pool, envID)
	require.NoError(t, err)
	require.Equal(t, second, sealed)
	var pending *time.Time
	require.NoError(t, a.Pool.QueryRow(t.Context(), `SELECT key_pending_since FROM environments WHERE id = $1`, envID).Scan(&pending))
	require.Nil(t, pending)

	code, body = a.do(http.MethodGet, keysPath, adminToken, nil)
	require.Equal(t, http.StatusOK, code)
	keys := body["keys"].([]any)
	require.Len(t, keys, 2)
	require.Equal(t, []int64{secondID, firstID}, []int64{keyID(keys[0]), keyID(keys[1])}, "newest first")
	require.NotNil(t, keys[1].(map[string]any)["lastUsedAt"], "the first key's use is recorded")
	require.NotNil(t, keys[1].(map[string]any)["expiresAt"])
	require.Nil(t, keys[0].(map[string]any)["expiresAt"])

	// A rotation without overlap ends both older keys at once.
	code, body = a.do(http.MethodPost, keysPath, adminToken, map[string]any{"overlapSeconds": 0})
	require.Equal(t, http.StatusCreated, code, "%v", body)
	third := body["key"].(map[string]any)["apiKey"].(string)
	require.Len(t, body["replacedKeys"], 2)
	for _, old := range []string{first, second} {
		code, _ := a.me(old)
		require.Equal(t, http.StatusUnauthorized, code)
	}
	code, _ = a.me(third)
	require.Equal(t, http.StatusOK, code)

	// Revocation is at once; the answer says when no working key is left.
	thirdID := keyID(body["key"])
	code, body = a.do(http.MethodDelete, keysPath+"/"+strconv.FormatInt(thirdID, 10), adminToken, nil)
	require.Equal(t, http.StatusOK, code, "%v", body)
	revokedAt := body["key"].(map[string]any)["revokedAt"]
	require.NotNil(t, revokedAt)
	require.Equal(t, false, body["key"].(map[string]any)["active"])
	require.Contains(t, body["message"], "no working key left")
	code, _ = a.me(third)
	require.Equal(t, http.StatusUnauthorized, code)
	code, body = a.do(http.MethodDelete, keysPath+"/"+strconv.FormatInt(thirdID, 10), adminToken, nil)
	require.Equal(t, http.StatusOK, code, "revoking twice answers the key as it is")
	require.Equal(t, revokedAt, body["key"].(map[string]any)["revokedAt"])

	// A new key brings the tenant back.
	code, body = a.do(http.MethodPost, keysPath, adminToken, nil)
	require.Equal(t, http.StatusCreated, code, "%v", body)
	code, _ = a.me(body["key"].(map[string]any)["apiKey"].(string))
	require.Equal(t, http.StatusOK, code)
}

func TestKeys_BadInput_UnknownOrOthersKey_NotAdmin(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t)
	a.startProvisioner()
	envID, key := a.insertTenant("keys-bad", "running")
	otherID, _ := a.insertTenant("keys-other", "running")
	keysPath := fmt.Sprintf("/api/v1/tenant/%d/keys", envID)

	for _, tc := range []struct {
		body any
		want string
	}{
		{map[string]any{"overlapSeconds": -1}, "overlapSeconds -1 is out of range"},
		{map[string]any{"overlapSeconds": 40 * 24 * 3600}, "overlapSeconds 3456000 is out of range"},
		{map[string]any{"overlapSeconds": int64(9223372037)}, "overlapSeconds 9223372037 is out of range"}, // overflows a Duration
		{map[string]any{"overlapSeconds": "1h"}, "overlapSeconds: must be"},
		{map[string]any{"overlap": 10}, "unknown field"},
	} {
		code, body := a.do(http.MethodPost, keysPath, adminToken, tc.body)
		require.Equal(t, http.StatusBadRequest, code, "%v", tc.body)
		require.Contains(t, errorMessage(body), tc.want)
	}
	code, body := a.do(http.MethodGet, keysPath, adminToken, nil)
	require.Equal(t, http.StatusOK, code)
	require.Len(t, body["keys"], 1, "no bad request made a key")
	ownID := keyID(body["keys"].([]any)[0])

	code, body = a.do(http.MethodDelete, keysPath+"/abc", adminToken, nil)
	require.Equal(t, http.StatusBadRequest, code)
	require.Contains(t, errorMessage(body), `keyId "abc" is not valid`)
	code, _ = a.do(http.MethodDelete, keysPath+"/999999", adminToken, nil)
	require.Equal(t, http.StatusNotFound, code)
	code, _ = a.do(http.MethodDelete, fmt.Sprintf("/api/v1/tenant/%d/keys/%d", otherID, ownID), adminToken, nil)
	require.Equal(t, http.StatusNotFound, code, "a key is revoked through its own tenant only")
	code, _ = a.me(key)
	require.Equal(t, http.StatusOK, code)
	for _, method := range []string{http.MethodGet, http.MethodPost} {
		code, _ = a.do(method, "/api/v1/tenant/999999/keys", adminToken, nil)
		require.Equal(t, http.StatusNotFound, code, method)
		code, _ = a.do(method, keysPath, key, nil)
		require.Equal(t, http.StatusUnauthorized, code, "a tenant key cannot %s keys", method)
	}

	// Working keys are bounded: rotations with an overlap stop at ten, one without still goes.
	for range 9 {
		code, body = a.do(http.MethodPost, keysPath, adminToken, nil)
		require.Equal(t, http.StatusCreated, code, "%v", body)
	}
	code, body = a.do(http.MethodPost, keysPath, adminToken, nil)
	require.Equal(t, http.StatusConflict, code, "%v", body)
	require.Equal(t, "too_many_keys", errorCode(body))
	require.Contains(t, errorMessage(body), "has 10 working keys")
	code, body = a.do(http.MethodPost, keysPath, adminToken, map[string]any{"overlapSeconds": 0})
	require.Equal(t, http.StatusCreated, code, "%v", body)
	require.Len(t, body["replacedKeys"], 10)
	code, _ = a.me(key)
	require.Equal(t, http.StatusUnauthorized, code)
}

func TestKeys_DestroyedTenant_409_KeyRecordedDuringADestroyIsRevoked(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t)
	a.startProvisioner()
	goneID, _ := a.insertTenant("keys-gone", "destroyed")
	code, body := a.do(http.MethodPost, fmt.Sprintf("/api/v1/tenant/%d/keys", goneID), adminToken, nil)
	require.Equal(t, http.StatusConflict, code, "%v", body)
	require.Contains(t, errorMessage(body), "destroyed")

	// The destroy was asked of the API, and the provisioner has not taken it yet: the key it
	// issues meanwhile is recorded revoked.
	envID, _ := a.insertTenant("keys-racing", "running")
	_, err := a.Pool.Exec(t.Context(), `UPDATE tenant_keys SET revoked_at = now(), revoked_reason = 'destroyed' WHERE env_id = $1`, envID)
	require.NoError(t, err)
	code, body = a.do(http.MethodPost, fmt.Sprintf("/api/v1/tenant/%d/keys", envID), adminToken, nil)
	require.Equal(t, http.StatusConflict, code, "%v", body)
	var active int
	require.NoError(t, a.Pool.QueryRow(t.Context(), `SELECT count(*) FROM tenant_keys WHERE env_id = $1 AND revoked_at IS NULL`, envID).Scan(&active))
	require.Zero(t, active)
}
