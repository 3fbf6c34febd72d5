package api_test

import (
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestIdempotencyKey_RetriedCreate_OneTaskOneRun: the same key and body answer with the first
// request's task, as often and as concurrently as they come, and run and bill it once; the
// key with another body is refused; another tenant's key of the same name is its own.
func TestIdempotencyKey_RetriedCreate_OneTaskOneRun(t *testing.T) {
	t.Parallel()
	c := newConvergeEnv(t, 2*time.Millisecond)
	acme, key := c.insertTenant("acme", "running")
	_, otherKey := c.insertTenant("other", "running")
	body := map[string]any{"prompt": "Design a rate limiter. [sim:converge]"}
	withKey := func(k string) map[string]string { return map[string]string{"Idempotency-Key": k} }

	first := call(t, c.URL, http.MethodPost, "/api/v1/design", key, body, withKey("retry-1"))
	require.Equal(t, http.StatusOK, first.Status, "%s", first.Raw)
	id := first.task(t).TaskID
	calls := c.provider.calls.Load()

	// Retried, eight at once: every answer is the first task, finished, and nothing runs.
	var wg sync.WaitGroup
	answers := make([]answer, 8)
	for i := range answers {
		wg.Go(func() { answers[i] = call(t, c.URL, http.MethodPost, "/api/v1/design", key, body, withKey("retry-1")) })
	}
	wg.Wait()
	for _, a := range answers {
		require.Equal(t, http.StatusOK, a.Status, "%s", a.Raw)
		require.Equal(t, id, a.task(t).TaskID)
		require.Equal(t, "true", a.Header.Get("Idempotent-Replayed"))
	}
	require.Equal(t, calls, c.provider.calls.Load(), "a replay calls no provider")

	// Concurrent first requests with a new key: one task between them.
	for i := range answers {
		wg.Go(func() {
			answers[i] = call(t, c.URL, http.MethodPost, "/api/v1/design", key, map[string]any{"prompt": "Design a queue. [sim:converge]"}, withKey("race-1"))
		})
	}
	wg.Wait()
	ids := map[string]bool{}
	for _, a := range answers {
		require.Contains(t, []int{http.StatusOK, http.StatusAccepted}, a.Status, "%s", a.Raw)
		ids[a.task(t).TaskID] = true
	}
	require.Len(t, ids, 1, "one task for one key")

	var tasks int
	require.NoError(t, c.Pool.QueryRow(t.Context(), `SELECT count(*) FROM api.tasks WHERE env_id = $1`, acme).Scan(&tasks))
	require.Equal(t, 2, tasks, "one task per key")

	// The key with another body: refused, naming the key.
	other := call(t, c.URL, http.MethodPost, "/api/v1/design", key, map[string]any{"prompt": "Design something else"}, withKey("retry-1"))
	require.Equal(t, http.StatusUnprocessableEntity, other.Status, "%s", other.Raw)
	require.Contains(t, string(other.Raw), `Idempotency-Key \"retry-1\" was used for another request`)

	// An async first answer is replayed as one, even once the task has finished.
	async := call(t, c.URL, http.MethodPost, "/api/v1/converge", key, map[string]any{"prompt": "Plan a launch. [sim:converge]", "async": true}, withKey("async-1"))
	require.Equal(t, http.StatusAccepted, async.Status, "%s", async.Raw)
	c.waitTask(t, key, async.task(t).TaskID, finished)
	again := call(t, c.URL, http.MethodPost, "/api/v1/converge", key, map[string]any{"prompt": "Plan a launch. [sim:converge]", "async": true}, withKey("async-1"))
	require.Equal(t, http.StatusAccepted, again.Status)
	require.Equal(t, async.task(t).TaskID, again.task(t).TaskID)

	// Another tenant's key of the same name is its own.
	theirs := call(t, c.URL, http.MethodPost, "/api/v1/design", otherKey, body, withKey("retry-1"))
	require.Equal(t, http.StatusOK, theirs.Status, "%s", theirs.Raw)
	require.NotEqual(t, id, theirs.task(t).TaskID)

	for _, bad := range []string{strings.Repeat("k", 256), "caf\u00e9"} {
		a := call(t, c.URL, http.MethodPost, "/api/v1/design", key, body, withKey(bad))
		require.Equal(t, http.StatusBadRequest, a.Status, "%s", a.Raw)
		require.Contains(t, string(a.Raw), "Idempotency-Key: use 1 to 255 printable ASCII characters")
	}
}
