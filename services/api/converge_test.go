package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/convergence-dev/convergence/internal/taskspec"
	contract "github.com/convergence-dev/convergence/pkg/api"
	"github.com/convergence-dev/convergence/pkg/events"
	"github.com/convergence-dev/convergence/services/api"
)

func TestConverge_SyncWithSimulatedAgents_EachStopReasonWithAConsistentScore(t *testing.T) {
	t.Parallel()
	c := newConvergeEnv(t, 2*time.Millisecond)
	_, key := c.insertTenant("acme", "running")
	tests := []struct {
		name      string
		body      map[string]any
		stop      string
		converged bool
		rounds    func(n int) bool
	}{
		{"converged", map[string]any{"prompt": "Design a rate limiter. [sim:converge]"}, "converged", true, func(n int) bool { return n == 3 }},
		{"stalemate", map[string]any{"prompt": "Pick a database. [sim:stalemate]", "maxRounds": 8}, "stalemate", false, func(n int) bool { return n == 3 }},
		{"max rounds", map[string]any{"prompt": "Name the product. [sim:never]", "maxRounds": 3}, "max_rounds", false, func(n int) bool { return n == 3 }},
		{"budget exhausted", map[string]any{"prompt": "Write a spec. [sim:converge]", "tokenBudget": 6000}, "budget_exhausted", false, func(n int) bool { return n >= 1 && n < 3 }},
		// Ten rounds are twenty 2 ms calls: 40 ms of provider time alone, twice the timeout.
		{"timeout", map[string]any{"prompt": "Plan a year. [sim:never]", "maxRounds": 10, "timeoutSeconds": 0.02}, "timeout", false, func(n int) bool { return n < 10 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			a := c.call(t, http.MethodPost, "/api/v1/design", key, tt.body)
			require.Equal(t, http.StatusOK, a.Status, "%s", a.Raw)
			v := a.task(t)
			require.Equal(t, "/api/v1/converge/"+v.TaskID, a.Header.Get("Location"))
			require.Equal(t, contract.TaskStatusCompleted, v.Status)
			require.Equal(t, "design", v.Type)
			require.EqualValues(t, tt.stop, v.Result.StopReason)
			require.Equal(t, tt.converged, v.Result.Converged)
			require.True(t, tt.rounds(v.Result.Rounds), "%d rounds", v.Result.Rounds)
			requireScoreConsistent(t, v)
			if tt.converged {
				require.True(t, strings.HasPrefix(v.Result.Output, "Final answer."))
				require.GreaterOrEqual(t, v.Result.ConvergenceScore, 80)
			} else {
				require.Contains(t, v.Result.Output, "Not converged")
			}
			if tt.stop == "budget_exhausted" {
				require.LessOrEqual(t, v.Usage.TotalTokens, int64(6000))
			}
			// GET answers the same as the sync answer did.
			g := c.call(t, http.MethodGet, "/api/v1/converge/"+v.TaskID, key, nil)
			require.Equal(t, http.StatusOK, g.Status)
			require.Equal(t, v.Result, g.task(t).Result)
		})
	}
}

func TestConverge_Cancel_RunningTaskEndsCancelled_FinishedTaskConflicts(t *testing.T) {
	t.Parallel()
	c := newConvergeEnv(t, 15*time.Millisecond)
	_, key := c.insertTenant("acme", "running")
	a := c.call(t, http.MethodPost, "/api/v1/converge", key, map[string]any{"prompt": "Analyse churn. [sim:never]", "maxRounds": 10, "async": true})
	require.Equal(t, http.StatusAccepted, a.Status, "%s", a.Raw)
	id := a.task(t).TaskID
	c.waitTask(t, key, id, func(v contract.Task) bool { return v.RoundsCompleted >= 1 })

	d := c.call(t, http.MethodDelete, "/api/v1/converge/"+id, key, nil)
	require.Equal(t, http.StatusOK, d.Status, "%s", d.Raw)
	v := d.task(t)
	require.Equal(t, contract.TaskStatusCancelled, v.Status)
	require.EqualValues(t, "cancelled", v.Result.StopReason)
	require.Less(t, v.Result.Rounds, 10)
	requireScoreConsistent(t, v)

	again := c.call(t, http.MethodDelete, "/api/v1/converge/"+id, key, nil)
	require.Equal(t, http.StatusOK, again.Status, "cancelling a cancelled task changes nothing")
	require.Equal(t, v.Result, again.task(t).Result)

	done := c.call(t, http.MethodPost, "/api/v1/converge", key, map[string]any{"prompt": "Quick one. [sim:converge]"})
	require.Equal(t, http.StatusOK, done.Status)
	conflict := c.call(t, http.MethodDelete, "/api/v1/converge/"+done.task(t).TaskID, key, nil)
	require.Equal(t, http.StatusConflict, conflict.Status)
	require.Equal(t, "conflict", errorCode(conflict.Body))
	require.Contains(t, string(conflict.Raw), "has already completed")
}

func TestConverge_AsyncAndSyncBound_Answer202WithTheTaskID(t *testing.T) {
	t.Parallel()
	c := newConvergeEnv(t, 100*time.Millisecond) // Seven calls: about 0.7s a task.
	_, key := c.insertTenant("acme", "running")
	body := map[string]any{"prompt": "Design a cache. [sim:converge]"}

	// Async answers before the task ends: still queued or running, with no result.
	a := call(t, c.URL, http.MethodPost, "/api/v1/converge", key, body, map[string]string{"Prefer": "respond-async"})
	require.Equal(t, http.StatusAccepted, a.Status, "%s", a.Raw)
	v := a.task(t)
	require.Contains(t, []contract.TaskStatus{contract.TaskStatusQueued, contract.TaskStatusRunning}, v.Status)
	require.Zero(t, v.Result, "no result before the task finishes")

	// A sync wait of 1 s on a task of about 2 s (ten rounds that never converge) waits its
	// bound, no less, and answers with the task still running.
	start := time.Now()
	b := call(t, c.URL, http.MethodPost, "/api/v1/converge", key, map[string]any{"prompt": "Design a cache. [sim:never]", "maxRounds": 10}, map[string]string{"Prefer": "wait=1"})
	require.Equal(t, http.StatusAccepted, b.Status, "%s", b.Raw)
	require.GreaterOrEqual(t, time.Since(start), time.Second, "it waited its bound")
	require.Equal(t, contract.TaskStatusRunning, b.task(t).Status, "it answered before the task ended")

	final := c.waitTask(t, key, v.TaskID, finished)
	require.EqualValues(t, "converged", final.Result.StopReason)
}

func TestConverge_ServerShutsDownDuringSyncWait_Answers202AtOnceAndTheTaskRunsOn(t *testing.T) {
	t.Parallel()
	c := newConvergeEnv(t, 50*time.Millisecond)
	_, key := c.insertTenant("acme", "running")
	url, shutdown := c.serveAPIWithShutdown()
	type result struct {
		a   answer
		err error
	}
	got := make(chan result, 1)
	go func() {
		a, err := tryCall(url, http.MethodPost, "/api/v1/converge", key, map[string]any{"prompt": "Long one. [sim:never]", "maxRounds": 10}, nil)
		got <- result{a, err}
	}()
	var id string
	require.Eventually(t, func() bool {
		return c.Pool.QueryRow(t.Context(), `SELECT id FROM convergence_tasks`).Scan(&id) == nil
	}, 10*time.Second, 10*time.Millisecond)
	time.Sleep(100 * time.Millisecond) // The request is waiting for the result.
	start := time.Now()
	require.NoError(t, shutdown())
	r := <-got
	require.NoError(t, r.err, "the waiting caller got an answer")
	require.Less(t, time.Since(start), 3*time.Second, "the shutdown did not wait out the sync bound")
	require.Equal(t, http.StatusAccepted, r.a.Status, "%s", r.a.Raw)
	require.Equal(t, id, r.a.task(t).TaskID)
	require.EqualValues(t, "max_rounds", c.waitTask(t, key, id, finished).Result.StopReason, "the task ran on")
}

func TestConverge_Shortcuts_SetTheTypeAndItsDefaultRoles(t *testing.T) {
	t.Parallel()
	c := newConvergeEnv(t, 0)
	_, key := c.insertTenant("acme", "running")
	for path, roles := range map[string][2]string{
		"review":   {"Senior Reviewer", "Author's Advocate"},
		"decide":   {"Decision Advocate", "Devil's Advocate"},
		"plan":     {"Delivery Planner", "Risk Analyst"},
		"analyze":  {"Analyst", "Skeptical Reviewer"},
		"generate": {"Creator", "Editor"},
	} {
		a := c.call(t, http.MethodPost, "/api/v1/"+path, key, map[string]any{"prompt": "Something. [sim:converge]", "async": true})
		require.Equal(t, http.StatusAccepted, a.Status, "%s", a.Raw)
		v := a.task(t)
		require.Equal(t, path, v.Type)
		got := [2]string{v.AgentARole, v.AgentBRole}
		require.Equal(t, roles, got)
	}
	a := c.call(t, http.MethodPost, "/api/v1/converge", key, map[string]any{"prompt": "x", "agentARole": "Security Expert", "agentBRole": "UX Designer", "async": true})
	require.Equal(t, http.StatusAccepted, a.Status)
	v := a.task(t)
	require.Equal(t, "custom", v.Type)
	require.Equal(t, [2]string{"Security Expert", "UX Designer"}, [2]string{v.AgentARole, v.AgentBRole})
}

func TestConverge_BadInput_400SayingWhatToFix(t *testing.T) {
	t.Parallel()
	c := newConvergeEnv(t, 0)
	_, key := c.insertTenant("acme", "running")
	tests := []struct {
		name, path string
		body       any
		want       string // in the message
	}{
		{"empty prompt", "converge", map[string]any{"prompt": "   "}, "prompt: must not be empty"},
		{"no prompt", "converge", map[string]any{"type": "design"}, "prompt: must not be empty"},
		{"unknown type", "converge", map[string]any{"prompt": "x", "type": "poem"}, `type: "poem" is not a task type; use one of design, review, decide, plan, analyze, generate, custom`},
		{"oversize prompt", "converge", map[string]any{"prompt": strings.Repeat("a", 40<<10)}, "prompt: is 40960 bytes; shorten it to at most 32768"},
		{"oversize context", "converge", map[string]any{"prompt": "x", "context": strings.Repeat("a", 70<<10)}, "context: is 71680 bytes; shorten it to at most 65536"},
		{"max rounds beyond the cap", "converge", map[string]any{"prompt": "x", "maxRounds": 11}, "maxRounds: is 11; use a value from 2 to 10"},
		{"max rounds below two", "converge", map[string]any{"prompt": "x", "maxRounds": 1}, "maxRounds: is 1; use a value from 2 to 10"},
		{"webhook not http", "converge", map[string]any{"prompt": "x", "webhookUrl": "ftp://example.com/hook"}, "webhookUrl: must be an http or https URL"},
		{"webhook relative", "converge", map[string]any{"prompt": "x", "webhookUrl": "/hooks"}, "webhookUrl: must be an http or https URL"},
		{"webhook with credentials", "converge", map[string]any{"prompt": "x", "webhookUrl": "https://u:p@example.com/h"}, "webhookUrl: must not carry credentials"},
		{"webhook too long", "converge", map[string]any{"prompt": "x", "webhookUrl": "https://example.com/" + strings.Repeat("a", 2100)}, "webhookUrl: is 2120 bytes; use a URL of at most 2048"},
		{"negative budget", "converge", map[string]any{"prompt": "x", "tokenBudget": -1}, "tokenBudget: must not be negative"},
		{"timeout too long", "converge", map[string]any{"prompt": "x", "timeoutSeconds": 3600}, "timeoutSeconds: is 3600; use at most 1800"},
		{"model with spaces", "converge", map[string]any{"prompt": "x", "model": "gpt 4"}, "model: must be a model name"},
		{"unknown field", "converge", map[string]any{"prompt": "x", "maxRound": 3}, `unknown field "maxRound"; the fields are agentARole, agentBRole, async, context, maxRounds, model, prompt`},
		{"wrong type", "converge", map[string]any{"prompt": "x", "maxRounds": "three"}, "maxRounds: must be a number, not a JSON string"},
		{"not JSON", "converge", "{prompt: x}", "the body is not one valid JSON object"},
		{"empty body", "converge", "", "send a JSON object with at least a prompt"},
		{"two objects", "converge", `{"prompt":"x"} {"prompt":"y"}`, "the body is not one valid JSON object"},
		{"type against the shortcut", "review", map[string]any{"prompt": "x", "type": "plan"}, "type: this endpoint makes review tasks"},
	}
	for _, tt := range tests {
		a := c.call(t, http.MethodPost, "/api/v1/"+tt.path, key, tt.body)
		require.Equal(t, http.StatusBadRequest, a.Status, "%s: %s", tt.name, a.Raw)
		require.Equal(t, "invalid_request", errorCode(a.Body), tt.name)
		msg := a.Body["error"].(map[string]any)["message"].(string)
		require.Contains(t, msg, tt.want, tt.name)
		require.NotEmpty(t, a.Body["error"].(map[string]any)["requestId"], tt.name)
	}
	var n int
	require.NoError(t, c.Pool.QueryRow(t.Context(), `SELECT count(*) FROM convergence_tasks`).Scan(&n))
	require.Zero(t, n, "nothing invalid was queued")

	// A body over the API's limit is a 413.
	a := c.call(t, http.MethodPost, "/api/v1/converge", key, map[string]any{"prompt": strings.Repeat("a", 2<<20)})
	require.Equal(t, http.StatusRequestEntityTooLarge, a.Status)
	require.Equal(t, "too_large", errorCode(a.Body))
}

func TestConverge_Auth_WrongKey401_OtherTenantsTask404(t *testing.T) {
	t.Parallel()
	c := newConvergeEnv(t, 0)
	_, key := c.insertTenant("acme", "running")
	_, otherKey := c.insertTenant("globex", "running")
	a := c.call(t, http.MethodPost, "/api/v1/converge", key, map[string]any{"prompt": "Secret plans. [sim:converge]"})
	require.Equal(t, http.StatusOK, a.Status)
	id := a.task(t).TaskID

	for name, k := range map[string]string{"no key": "", "wrong key": "sk_tenant_" + strings.Repeat("0", 64), "malformed": "sk_tenant_x", "admin token": adminToken} {
		for _, r := range []struct{ method, path string }{
			{http.MethodPost, "/api/v1/converge"}, {http.MethodPost, "/api/v1/design"},
			{http.MethodGet, "/api/v1/converge/" + id}, {http.MethodGet, "/api/v1/converge/" + id + "/events"},
			{http.MethodDelete, "/api/v1/converge/" + id}, {http.MethodGet, "/api/v1/webhooks/secret"},
		} {
			got := c.call(t, r.method, r.path, k, map[string]any{"prompt": "x"})
			require.Equal(t, http.StatusUnauthorized, got.Status, "%s %s %s", name, r.method, r.path)
			require.Equal(t, "unauthorized", errorCode(got.Body))
		}
	}
	for _, r := range []struct{ method, path string }{
		{http.MethodGet, "/api/v1/converge/" + id}, {http.MethodGet, "/api/v1/converge/" + id + "/events"},
		{http.MethodDelete, "/api/v1/converge/" + id},
		{http.MethodGet, "/api/v1/converge/" + taskspec.NewID()}, {http.MethodGet, "/api/v1/converge/not-a-task-id"},
	} {
		got := c.call(t, r.method, r.path, otherKey, nil)
		require.Equal(t, http.StatusNotFound, got.Status, "%s %s", r.method, r.path)
		require.Equal(t, "not_found", errorCode(got.Body))
	}
	v := c.waitTask(t, key, id, finished)
	require.Equal(t, contract.TaskStatusCompleted, v.Status, "the other tenant's DELETE did not touch it")
}

func TestConverge_RateLimit_429WithRetryAfter_SharedByAPIReplicas(t *testing.T) {
	t.Parallel()
	c := newConvergeEnv(t, 0)
	acme, key := c.insertTenant("acme", "running")
	_, otherKey := c.insertTenant("globex", "running")
	// Three at once, then one every ten seconds.
	_, err := c.Pool.Exec(t.Context(), `INSERT INTO api_rate_limits (env_id, class, per_minute, burst) VALUES ($1, 'converge.create', 6, 3)`, acme)
	require.NoError(t, err)
	replicas := []string{c.URL, c.serveAPI()} // Two API replicas on one database.
	body := map[string]any{"prompt": "x [sim:converge]", "async": true}
	for i := range 3 {
		a := call(t, replicas[i%2], http.MethodPost, "/api/v1/converge", key, body, nil)
		require.Equal(t, http.StatusAccepted, a.Status, "request %d: %s", i, a.Raw)
		require.Equal(t, "3", a.Header.Get("RateLimit-Limit"))
		require.Equal(t, strconv.Itoa(2-i), a.Header.Get("RateLimit-Remaining"))
	}
	for _, base := range replicas {
		a := call(t, base, http.MethodPost, "/api/v1/design", key, body, nil)
		require.Equal(t, http.StatusTooManyRequests, a.Status, "%s", a.Raw)
		require.Equal(t, "rate_limited", errorCode(a.Body))
		retry, err := strconv.Atoi(a.Header.Get("Retry-After"))
		require.NoError(t, err)
		require.InDelta(t, 10, retry, 1, "one token comes back every ten seconds")
		require.Contains(t, a.Body["error"].(map[string]any)["message"], "retry after")
	}
	var n int
	require.NoError(t, c.Pool.QueryRow(t.Context(), `SELECT count(*) FROM api.tasks WHERE env_id = $1`, acme).Scan(&n))
	require.Equal(t, 3, n, "a refused request queues nothing")

	// Another tenant has its own bucket; reads have theirs.
	require.Equal(t, http.StatusAccepted, c.call(t, http.MethodPost, "/api/v1/converge", otherKey, body).Status)
	require.Equal(t, http.StatusOK, c.call(t, http.MethodGet, "/api/v1/webhooks/secret", key, nil).Status)
}

func TestConverge_BacklogFull_429UntilTasksLeave(t *testing.T) {
	t.Parallel()
	c := newConvergeEnv(t, time.Hour) // Every task stays running until it is cancelled.
	_, key := c.insertTenant("acme", "running")
	base := c.serveAPIWith(api.ConvergeConfig{MaxBacklog: 3})
	body := map[string]any{"prompt": "x [sim:converge]", "async": true}
	var ids []string
	for i := range 3 {
		a := call(t, base, http.MethodPost, "/api/v1/converge", key, body, nil)
		require.Equal(t, http.StatusAccepted, a.Status, "request %d: %s", i, a.Raw)
		ids = append(ids, a.task(t).TaskID)
	}
	a := call(t, base, http.MethodPost, "/api/v1/design", key, body, nil)
	require.Equal(t, http.StatusTooManyRequests, a.Status, "%s", a.Raw)
	require.Equal(t, "backlog_full", errorCode(a.Body))
	require.Equal(t, "1", a.Header.Get("Retry-After"))
	require.Contains(t, a.Body["error"].(map[string]any)["message"], "holds 3 convergence tasks")
	var n int
	require.NoError(t, c.Pool.QueryRow(t.Context(), `SELECT count(*) FROM api.tasks`).Scan(&n))
	require.Equal(t, 3, n, "a refused request queues nothing")

	// Once the tasks leave, the converger's consumer holds none and new ones are admitted.
	for _, id := range ids {
		require.Equal(t, http.StatusOK, call(t, base, http.MethodDelete, "/api/v1/converge/"+id, key, nil, nil).Status)
	}
	require.Eventually(t, func() bool {
		a := call(t, base, http.MethodPost, "/api/v1/converge", key, body, nil)
		require.Contains(t, []int{http.StatusAccepted, http.StatusTooManyRequests}, a.Status, "%s", a.Raw)
		return a.Status == http.StatusAccepted
	}, 10*time.Second, 100*time.Millisecond)
}

func TestConverge_TenantTaskCap_429UntilItsTasksEnd_OtherTenantsUnaffected(t *testing.T) {
	t.Parallel()
	c := newConvergeEnv(t, time.Hour) // Every task stays running until it is cancelled.
	acme, key := c.insertTenant("acme", "running")
	_, otherKey := c.insertTenant("globex", "running")
	base := c.serveAPIWith(api.ConvergeConfig{MaxTenantTasks: 2})
	body := map[string]any{"prompt": "x [sim:converge]", "async": true}
	var ids []string
	for i := range 2 {
		a := call(t, base, http.MethodPost, "/api/v1/converge", key, body, nil)
		require.Equal(t, http.StatusAccepted, a.Status, "request %d: %s", i, a.Raw)
		ids = append(ids, a.task(t).TaskID)
	}
	a := call(t, base, http.MethodPost, "/api/v1/plan", key, body, nil)
	require.Equal(t, http.StatusTooManyRequests, a.Status, "%s", a.Raw)
	require.Equal(t, "too_many_tasks", errorCode(a.Body))
	require.Equal(t, "5", a.Header.Get("Retry-After"))
	require.Contains(t, a.Body["error"].(map[string]any)["message"], "2 unfinished convergence tasks")
	var recorded, sent int
	require.NoError(t, c.Pool.QueryRow(t.Context(), `SELECT count(*) FROM api.tasks WHERE env_id = $1`, acme).Scan(&recorded))
	require.NoError(t, c.Pool.QueryRow(t.Context(), `SELECT count(*) FROM api.outbox`).Scan(&sent))
	require.Equal(t, 2, recorded, "a refused request records nothing")
	require.Equal(t, 2, sent, "and sends the converger nothing")

	require.Equal(t, http.StatusAccepted, call(t, base, http.MethodPost, "/api/v1/converge", otherKey, body, nil).Status,
		"another tenant has its own cap")

	// Once one of its tasks has ended, the tenant may create another.
	require.Equal(t, http.StatusOK, call(t, base, http.MethodDelete, "/api/v1/converge/"+ids[0], key, nil, nil).Status)
	require.Eventually(t, func() bool {
		a := call(t, base, http.MethodPost, "/api/v1/converge", key, body, nil)
		require.Contains(t, []int{http.StatusAccepted, http.StatusTooManyRequests}, a.Status, "%s", a.Raw)
		return a.Status == http.StatusAccepted
	}, 10*time.Second, 100*time.Millisecond)
}

func TestConverge_TenantOpenWaitsAndStreamsCapped_PerReplica(t *testing.T) {
	t.Parallel()
	c := newConvergeEnv(t, time.Hour) // Every task stays running.
	acme, key := c.insertTenant("acme", "running")
	_, otherKey := c.insertTenant("globex", "running")
	base := c.serveAPIWith(api.ConvergeConfig{MaxTenantWaits: 1, MaxTenantStreams: 1})
	body := map[string]any{"prompt": "x [sim:converge]"}

	// One sync wait is held open; a second is refused at once and records nothing.
	first := make(chan int, 1) // The held wait's status; the request is made apart from the test's goroutine.
	go func() {
		req, _ := http.NewRequest(http.MethodPost, base+"/api/v1/converge", strings.NewReader(`{"prompt":"x [sim:converge]"}`))
		req.Header.Set("Authorization", "Bearer "+key)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Prefer", "wait=3")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			first <- 0
			return
		}
		_ = resp.Body.Close()
		first <- resp.StatusCode
	}()
	require.Eventually(t, func() bool {
		var n int
		require.NoError(t, c.Pool.QueryRow(t.Context(), `SELECT count(*) FROM api.tasks WHERE env_id = $1`, acme).Scan(&n))
		return n == 1
	}, 5*time.Second, 10*time.Millisecond, "the first wait holds its slot once its task is recorded")
	refused := call(t, base, http.MethodPost, "/api/v1/converge", key, body, map[string]string{"Prefer": "wait=3"})
	require.Equal(t, http.StatusTooManyRequests, refused.Status, "%s", refused.Raw)
	require.Equal(t, "too_many_open", errorCode(refused.Body))
	require.Contains(t, refused.Body["error"].(map[string]any)["message"], "1 sync waits open")
	async := call(t, base, http.MethodPost, "/api/v1/converge", key, map[string]any{"prompt": "x [sim:converge]", "async": true}, nil)
	require.Equal(t, http.StatusAccepted, async.Status, "async creates hold nothing open")
	require.Equal(t, http.StatusAccepted, call(t, base, http.MethodPost, "/api/v1/converge", otherKey, body, map[string]string{"Prefer": "wait=1"}).Status,
		"another tenant waits on its own slots")
	require.Equal(t, http.StatusAccepted, <-first, "the held wait answered 202 when it ran out")
	var n int
	require.NoError(t, c.Pool.QueryRow(t.Context(), `SELECT count(*) FROM api.tasks`).Scan(&n))
	require.Equal(t, 3, n, "the refused wait recorded no task")

	// One progress stream is held open; a second is refused until the first closes.
	id := async.task(t).TaskID
	stream := func() (*http.Response, context.CancelFunc) {
		ctx, cancel := context.WithCancel(t.Context())
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/api/v1/converge/"+id+"/events", nil)
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		return resp, cancel
	}
	open, closeOpen := stream()
	require.Equal(t, http.StatusOK, open.StatusCode)
	second, closeSecond := stream()
	require.Equal(t, http.StatusTooManyRequests, second.StatusCode)
	_ = second.Body.Close()
	closeSecond()
	closeOpen()
	_ = open.Body.Close()
	require.Eventually(t, func() bool {
		again, closeAgain := stream()
		defer closeAgain()
		defer again.Body.Close()
		return again.StatusCode == http.StatusOK
	}, 5*time.Second, 20*time.Millisecond, "a closed stream frees its slot")
}

func TestConverge_Async200TasksFromTwoTenants_EachCompletesExactlyOnce(t *testing.T) {
	t.Parallel()
	c := newConvergeEnv(t, 5*time.Millisecond)
	acme, acmeKey := c.insertTenant("acme", "running")
	globex, globexKey := c.insertTenant("globex", "running")
	c.unlimited(acme)
	c.unlimited(globex)
	type created struct {
		id    string
		envID int64
		key   string
	}
	var (
		mu  sync.Mutex
		all []created
		wg  sync.WaitGroup
	)
	for w := range 8 {
		wg.Go(func() {
			for i := w; i < 200; i += 8 {
				envID, key := acme, acmeKey
				if i%2 == 1 {
					envID, key = globex, globexKey
				}
				a, err := tryCall(c.URL, http.MethodPost, "/api/v1/converge", key, map[string]any{"prompt": fmt.Sprintf("Task %d. [sim:converge]", i), "async": true}, nil)
				if err != nil {
					t.Error(err)
					return
				}
				if !assertStatus(t, http.StatusAccepted, a) {
					return
				}
				var ta taskAnswer
				if err := json.Unmarshal(a.Raw, &ta); err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				all = append(all, created{ta.TaskID, envID, key})
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	require.Len(t, all, 200)

	require.Eventually(t, func() bool {
		var n int
		require.NoError(t, c.Pool.QueryRow(t.Context(), `SELECT count(*) FROM convergence_tasks WHERE status = 'completed'`).Scan(&n))
		return n == 200
	}, 60*time.Second, 50*time.Millisecond)
	require.Eventually(t, func() bool { return len(c.resultEventsByTask(t)) == 200 }, 10*time.Second, 50*time.Millisecond)

	byTask := c.resultEventsByTask(t)
	for _, cr := range all {
		evs := byTask[cr.id]
		require.Len(t, evs, 1, "task %s has exactly one result event", cr.id)
		require.Equal(t, events.TypeConvergeCompleted, evs[0].Type)
		ev, err := events.DataAs[events.ConvergeCompleted](evs[0])
		require.NoError(t, err)
		require.Equal(t, cr.envID, ev.EnvID)
		require.Equal(t, "converged", ev.StopReason)
	}
	require.EqualValues(t, 200*7, c.provider.calls.Load(), "every task made its seven calls once: no task ran twice")
	var turns, rounds int
	require.NoError(t, c.Pool.QueryRow(t.Context(), `SELECT (SELECT count(*) FROM convergence_turns), (SELECT count(*) FROM convergence_rounds)`).Scan(&turns, &rounds))
	require.Equal(t, 200*7, turns)
	require.Equal(t, 200*3, rounds)

	// Each tenant sees its own tasks, and only those.
	for _, cr := range all[:20] {
		v := c.call(t, http.MethodGet, "/api/v1/converge/"+cr.id, cr.key, nil)
		require.Equal(t, http.StatusOK, v.Status)
		requireScoreConsistent(t, v.task(t))
		other := acmeKey
		if cr.key == acmeKey {
			other = globexKey
		}
		require.Equal(t, http.StatusNotFound, c.call(t, http.MethodGet, "/api/v1/converge/"+cr.id, other, nil).Status)
	}
}

// assertStatus reports whether a has the status, failing the test (but not the goroutine) if not.
func assertStatus(t testing.TB, status int, a answer) bool {
	t.Helper()
	if a.Status != status {
		t.Errorf("status %d, want %d: %s", a.Status, status, a.Raw)
		return false
	}
	return true
}

func TestConverge_Events_LateClientGetsEveryRoundInOrderThenTheResult(t *testing.T) {
	t.Parallel()
	c := newConvergeEnv(t, 25*time.Millisecond)
	_, key := c.insertTenant("acme", "running")
	a := c.call(t, http.MethodPost, "/api/v1/converge", key, map[string]any{"prompt": "Debate tabs and spaces. [sim:never]", "maxRounds": 6, "async": true})
	require.Equal(t, http.StatusAccepted, a.Status)
	id := a.task(t).TaskID

	early := c.openEvents(t, key, id, nil)
	c.waitTask(t, key, id, func(v contract.Task) bool { return v.RoundsCompleted >= 2 })
	late := c.openEvents(t, key, id, nil) // Two rounds are replayed from the record, the rest live.
	resumed := c.openEvents(t, key, id, map[string]string{"Last-Event-ID": "4"})

	for name, tc := range map[string]struct {
		ch    <-chan sse
		first int
	}{"early": {early, 1}, "late": {late, 1}, "resumed": {resumed, 5}} {
		got := collect(t, tc.ch, 20*time.Second)
		require.Len(t, got, 6-tc.first+2, "%s: every round, then the result", name)
		for i, ev := range got[:len(got)-1] {
			n := tc.first + i
			require.Equal(t, "round", ev.Event, name)
			require.Equal(t, strconv.Itoa(n), ev.ID, name)
			var rv contract.Round
			require.NoError(t, json.Unmarshal(ev.Data, &rv))
			require.Equal(t, n, rv.Round, "%s: in order", name)
			require.Equal(t, id, rv.TaskID)
			require.NotEmpty(t, rv.A.Proposal)
			require.NotEmpty(t, rv.B.Proposal)
			require.Equal(t, rv.A.Usage.Add(rv.B.Usage), rv.Usage)
		}
		last := got[len(got)-1]
		require.Equal(t, "result", last.Event, name)
		var v contract.Task
		require.NoError(t, json.Unmarshal(last.Data, &v))
		require.Equal(t, contract.TaskStatusCompleted, v.Status)
		require.EqualValues(t, "max_rounds", v.Result.StopReason)
		require.Equal(t, 6, v.Result.Rounds)
	}

	// A client that connects after the end gets the whole transcript and the result at once.
	after := collect(t, c.openEvents(t, key, id, nil), 5*time.Second)
	require.Len(t, after, 7)
	require.Equal(t, "result", after[6].Event)
}

func TestWebhookSecret_GetCreatesOnce_RotateKeepsThePreviousForADay(t *testing.T) {
	t.Parallel()
	c := newConvergeEnv(t, 0)
	_, key := c.insertTenant("acme", "running")
	first := c.call(t, http.MethodGet, "/api/v1/webhooks/secret", key, nil)
	require.Equal(t, http.StatusOK, first.Status, "%s", first.Raw)
	secret := first.Body["webhook"].(map[string]any)["secret"].(string)
	require.True(t, strings.HasPrefix(secret, "whsec_"))
	require.Equal(t, "no-store", first.Header.Get("Cache-Control"))
	require.Equal(t, secret, c.call(t, http.MethodGet, "/api/v1/webhooks/secret", key, nil).Body["webhook"].(map[string]any)["secret"])

	rot := c.call(t, http.MethodPost, "/api/v1/webhooks/secret/rotate", key, nil)
	require.Equal(t, http.StatusOK, rot.Status)
	w := rot.Body["webhook"].(map[string]any)
	require.NotEqual(t, secret, w["secret"])
	require.Equal(t, secret, w["previousSecret"])
	expires, err := time.Parse(time.RFC3339Nano, w["previousExpiresAt"].(string))
	require.NoError(t, err)
	require.InDelta(t, 24*time.Hour.Seconds(), time.Until(expires).Seconds(), 60)

	_, otherKey := c.insertTenant("globex", "running")
	require.NotEqual(t, w["secret"], c.call(t, http.MethodGet, "/api/v1/webhooks/secret", otherKey, nil).Body["webhook"].(map[string]any)["secret"])
}
