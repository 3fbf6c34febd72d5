package api_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// withKey sends an admin request under an Idempotency-Key and returns the status, the answer
// and whether it was a replay.
func (a *testAPI) withKey(method, path, key string, body any) (int, map[string]any, bool) {
	a.t.Helper()
	b, err := json.Marshal(body)
	require.NoError(a.t, err)
	req, err := http.NewRequestWithContext(a.t.Context(), method, a.URL+path, bytes.NewReader(b))
	require.NoError(a.t, err)
	req.Header.Set("Authorization", "Bearer "+adminToken)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", key)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(a.t, err)
	defer resp.Body.Close()
	var out map[string]any
	require.NoError(a.t, json.NewDecoder(resp.Body).Decode(&out))
	return resp.StatusCode, out, resp.Header.Get("Idempotent-Replayed") == "true"
}

func TestIdempotentRoutes_SpawnRotateInvoice_RetriesGetTheFirstAnswerSealed(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t)
	spawn := map[string]any{"name": "once"}
	const path = "/api/v1/tenant/spawn?async=true"

	// A refusal that says to retry gives the key back.
	code, body, _ := a.withKey(http.MethodPost, path, "spawn-1", spawn)
	require.Equal(t, http.StatusServiceUnavailable, code, "%v", body)
	a.startProvisioner()
	a.startMetering()

	// Concurrent retries under one key: one tenant; each answer is its answer, or 409 while it runs.
	const retries = 6
	answers := make(chan map[string]any, retries)
	var wg sync.WaitGroup
	for range retries {
		wg.Go(func() {
			code, body, _ := a.withKey(http.MethodPost, path, "spawn-1", spawn)
			if code == http.StatusConflict {
				assert.Equal(t, "idempotency_key_in_use", errorCode(body))
				return
			}
			assert.Equal(t, http.StatusAccepted, code, "%v", body)
			answers <- body
		})
	}
	wg.Wait()
	close(answers)
	code, first, replayed := a.withKey(http.MethodPost, path, "spawn-1", spawn)
	require.Equal(t, http.StatusAccepted, code, "%v", first)
	require.True(t, replayed)
	tenant := first["tenant"].(map[string]any)
	require.NotEmpty(t, tenant["apiKey"], "the replay carries the key: the first answer may have been lost")
	for body := range answers {
		require.Equal(t, first, body)
	}
	var n int
	require.NoError(t, a.Pool.QueryRow(t.Context(), `SELECT count(*) FROM environments WHERE name = 'once'`).Scan(&n))
	require.Equal(t, 1, n)
	var kept string
	require.NoError(t, a.Pool.QueryRow(t.Context(), `SELECT answer::text FROM api.operator_idempotency_keys WHERE key = 'spawn-1'`).Scan(&kept))
	require.NotContains(t, kept, tenant["apiKey"], "kept sealed")
	require.NotContains(t, kept, "once")

	code, body, _ = a.withKey(http.MethodPost, path, "spawn-1", map[string]any{"name": "twice"})
	require.Equal(t, http.StatusUnprocessableEntity, code, "%v", body)
	require.Equal(t, "idempotency_key_reused", errorCode(body))
	code, body, _ = a.withKey(http.MethodPost, "/api/v1/tenant/spawn", "spawn-1", spawn)
	require.Equal(t, http.StatusUnprocessableEntity, code, "the query is part of the request: %v", body)

	// A rotation retried: one new key, the same one.
	keys := fmt.Sprintf("/api/v1/tenant/%d/keys", int64(tenant["envId"].(float64)))
	code, rotated, _ := a.withKey(http.MethodPost, keys, "rotate-1", map[string]any{"overlapSeconds": 60})
	require.Equal(t, http.StatusCreated, code, "%v", rotated)
	code, again, replayed := a.withKey(http.MethodPost, keys, "rotate-1", map[string]any{"overlapSeconds": 60})
	require.Equal(t, http.StatusCreated, code)
	require.True(t, replayed)
	require.Equal(t, rotated["key"], again["key"])
	code, list := a.do(http.MethodGet, keys, adminToken, nil)
	require.Equal(t, http.StatusOK, code)
	require.Len(t, list["keys"], 2, "the spawn's and one rotation's")

	// Keys belong to a method and path: the same key for another tenant's rotation is its own.
	otherEnv, _ := a.insertTenant("other", "running")
	code, body, replayed = a.withKey(http.MethodPost, fmt.Sprintf("/api/v1/tenant/%d/keys", otherEnv), "rotate-1", map[string]any{"overlapSeconds": 60})
	require.Equal(t, http.StatusCreated, code, "%v", body)
	require.False(t, replayed)

	orgID := a.createOrg("billed-once", "pro")
	invoices := fmt.Sprintf("/api/v1/orgs/%d/invoices", orgID)
	code, inv, _ := a.withKey(http.MethodPost, invoices, "inv-1", map[string]any{"period": "2026-11"})
	require.Equal(t, http.StatusCreated, code, "%v", inv)
	code, again, replayed = a.withKey(http.MethodPost, invoices, "inv-1", map[string]any{"period": "2026-11"})
	require.Equal(t, http.StatusCreated, code)
	require.True(t, replayed)
	require.Equal(t, inv, again)
}

func TestIdempotentRoutes_KeyOfARequestThatNeverAnswered_FreeAgainOnceItsLeaseLapsed(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t)
	a.startProvisioner()
	envID, _ := a.insertTenant("leased", "running")
	keys := fmt.Sprintf("/api/v1/tenant/%d/keys", envID)
	rotate := map[string]any{"overlapSeconds": 60}
	code, body, _ := a.withKey(http.MethodPost, keys, "rotate-lease", rotate)
	require.Equal(t, http.StatusCreated, code, "%v", body)

	// As a replica that stopped while it ran the request leaves its key: taken, never answered,
	// renewed last when the replica was still there.
	abandoned := func(ago string) {
		_, err := a.Pool.Exec(t.Context(), `
			UPDATE api.operator_idempotency_keys SET status = 0, answer = 'null', created_at = now() - $1::interval
			WHERE key = 'rotate-lease'`, ago)
		require.NoError(t, err)
	}
	abandoned("5 seconds")
	code, body, _ = a.withKey(http.MethodPost, keys, "rotate-lease", rotate)
	require.Equal(t, http.StatusConflict, code, "renewed a moment ago, the request may still run: %v", body)
	require.Equal(t, "idempotency_key_in_use", errorCode(body))

	abandoned("61 seconds")
	code, body, replayed := a.withKey(http.MethodPost, keys, "rotate-lease", rotate)
	require.Equal(t, http.StatusCreated, code, "the lease lapsed: the retry runs: %v", body)
	require.False(t, replayed)
}
