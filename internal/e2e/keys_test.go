package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestKeys_RotateAndRevokeUnderTraffic_TheTenantAppLosesNoRequest rotates a running tenant's
// key while its app serves requests that call the platform with that key, then revokes the
// old key: the app moves to the new key by itself, and none of its requests fails.
func TestKeys_RotateAndRevokeUnderTraffic_TheTenantAppLosesNoRequest(t *testing.T) {
	t.Parallel()
	s := startStack(t)
	tn := s.spawn(t, "e2e-keys", false)
	tenantURL := fmt.Sprintf("http://127.0.0.1:%d", tn.Port)
	keysPath := fmt.Sprintf("/api/v1/tenant/%d/keys", tn.EnvID)

	code, body := call(t, http.MethodPost, tenantURL+"/api/converge", "", map[string]any{"prompt": "Name a colour", "async": true})
	require.Equal(t, http.StatusAccepted, code, "%s", body)
	var task struct {
		TaskID string `json:"taskId"`
	}
	require.NoError(t, json.Unmarshal(body, &task))
	require.NotEmpty(t, task.TaskID)

	// Traffic: the tenant app reads the task back through the platform, with its key, every
	// 50 ms until the test has seen enough (at most 2,000 requests).
	ctx, stop := context.WithCancel(t.Context())
	var (
		mu       sync.Mutex
		statuses = map[int]int{}
		wg       sync.WaitGroup
	)
	wg.Go(func() {
		for range 2000 {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, tenantURL+"/api/converge/"+task.TaskID, nil)
			resp, err := http.DefaultClient.Do(req)
			if ctx.Err() != nil {
				return
			}
			code := 0
			if err == nil {
				code = resp.StatusCode
				resp.Body.Close()
			}
			mu.Lock()
			statuses[code]++
			mu.Unlock()
			select {
			case <-ctx.Done():
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	})
	defer func() { stop(); wg.Wait() }()

	var keys struct {
		Keys []struct {
			ID         int64      `json:"id"`
			LastUsedAt *time.Time `json:"lastUsedAt"`
			Active     bool       `json:"active"`
		} `json:"keys"`
	}
	require.Equal(t, http.StatusOK, s.admin(t, http.MethodGet, keysPath, nil, &keys))
	require.Len(t, keys.Keys, 1)
	oldID := keys.Keys[0].ID

	var rotated struct {
		Key struct {
			ID     int64  `json:"id"`
			APIKey string `json:"apiKey"`
		} `json:"key"`
		Delivered bool `json:"delivered"`
	}
	require.Equal(t, http.StatusCreated, s.admin(t, http.MethodPost, keysPath, map[string]any{"overlapSeconds": 3600}, &rotated))
	require.True(t, rotated.Delivered, "the running container got the new key")

	// Only the app holds the new key, so its first use is the app's.
	require.Eventually(t, func() bool {
		require.Equal(t, http.StatusOK, s.admin(t, http.MethodGet, keysPath, nil, &keys))
		return keys.Keys[0].ID == rotated.Key.ID && keys.Keys[0].LastUsedAt != nil
	}, 20*time.Second, 100*time.Millisecond, "the tenant app calls the platform with its new key")

	require.Equal(t, http.StatusOK, s.admin(t, http.MethodDelete, fmt.Sprintf("%s/%d", keysPath, oldID), nil, nil))
	code, _ = s.do(t, http.MethodGet, "/api/v1/me", tn.APIKey, nil)
	require.Equal(t, http.StatusUnauthorized, code, "the revoked key is refused at once")
	served := func() (n int) {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range statuses {
			n += c
		}
		return n
	}
	atRevoke := served()
	require.Eventually(t, func() bool { return served() >= atRevoke+10 }, 30*time.Second, 50*time.Millisecond,
		"more traffic, on the new key alone")
	stop()
	wg.Wait()

	mu.Lock()
	defer mu.Unlock()
	for code, n := range statuses {
		require.Contains(t, []int{http.StatusOK, http.StatusAccepted}, code, "the tenant app answered %d times %d: %v", n, code, statuses)
	}
}
