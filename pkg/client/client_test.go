package client_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/convergence-dev/convergence/pkg/client"
)

func newClient(t *testing.T, h http.HandlerFunc, opts ...client.Option) *client.Client {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	c, err := client.New(srv.URL, "sk_tenant_test", opts...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func apiError(w http.ResponseWriter, status int, code string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	fmt.Fprintf(w, `{"success":false,"error":{"code":%q,"message":"m","requestId":"r1"}}`, code)
}

func TestCall_429WithRetryAfter_RetriedWithSameRequestID(t *testing.T) {
	t.Parallel()
	var calls atomic.Int32
	var ids []string
	c := newClient(t, func(w http.ResponseWriter, r *http.Request) {
		ids = append(ids, r.Header.Get("X-Request-ID"))
		if calls.Add(1) == 1 {
			w.Header().Set("Retry-After", "1")
			apiError(w, http.StatusTooManyRequests, "rate_limited")
			return
		}
		fmt.Fprint(w, `{"success":true,"task":{"taskId":"t1","status":"completed","result":{"convergenceScore":91}}}`)
	})
	start := time.Now()
	task, err := c.Task(t.Context(), "t1")
	if err != nil {
		t.Fatal(err)
	}
	if task.Result.ConvergenceScore != 91 || calls.Load() != 2 {
		t.Fatalf("task %+v after %d calls", task, calls.Load())
	}
	if waited := time.Since(start); waited < time.Second {
		t.Errorf("retried after %v, before the Retry-After of 1s", waited)
	}
	if ids[0] == "" || ids[0] != ids[1] {
		t.Errorf("request IDs %v: want one ID reused across retries", ids)
	}
}

func TestCall_ErrorsAreTyped(t *testing.T) {
	t.Parallel()
	tests := []struct {
		status int
		check  func(error) bool
	}{
		{http.StatusUnauthorized, func(err error) bool { var e *client.ClientError; return errors.As(err, &e) && e.Code == "x" }},
		{http.StatusNotFound, func(err error) bool { var e *client.ClientError; return errors.As(err, &e) }},
		{http.StatusTooManyRequests, func(err error) bool {
			var e *client.RateLimitError
			return errors.As(err, &e) && e.RetryAfter == time.Hour
		}},
		{http.StatusInternalServerError, func(err error) bool { var e *client.ServerError; return errors.As(err, &e) }},
	}
	for _, tt := range tests {
		c := newClient(t, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Retry-After", "3600") // Longer than the client waits: no retry.
			apiError(w, tt.status, "x")
		})
		_, err := c.Task(t.Context(), "t1")
		if !tt.check(err) {
			t.Errorf("%d: error %T %v is not of the expected type", tt.status, err, err)
		}
		var apiErr *client.APIError
		if !errors.As(err, &apiErr) || apiErr.StatusCode != tt.status || apiErr.RequestID != "r1" {
			t.Errorf("%d: %v does not wrap the *APIError", tt.status, err)
		}
	}
}

// A create retried after a 503 carries the same Idempotency-Key, so the platform runs it once.
func TestConverge_Retried_SameIdempotencyKey(t *testing.T) {
	t.Parallel()
	var keys []string
	c := newClient(t, func(w http.ResponseWriter, r *http.Request) {
		keys = append(keys, r.Header.Get("Idempotency-Key"))
		if len(keys) == 1 {
			w.Header().Set("Retry-After", "0")
			apiError(w, http.StatusServiceUnavailable, "unavailable")
			return
		}
		fmt.Fprint(w, `{"success":true,"taskId":"t1","task":{"taskId":"t1","status":"completed"}}`)
	})
	if _, err := c.Converge(t.Context(), client.Request{Prompt: "p"}); err != nil {
		t.Fatal(err)
	}
	if len(keys) != 2 || keys[0] == "" || keys[0] != keys[1] {
		t.Fatalf("Idempotency-Key per attempt: %q, want one key sent twice", keys)
	}
}

// A task that outlasts the API's sync wait is answered 202; Converge waits on for it.
func TestConverge_SyncAnswered202_WaitsForTheResult(t *testing.T) {
	t.Parallel()
	var polls atomic.Int32
	c := newClient(t, func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Method == http.MethodPost && r.URL.Path == "/api/v1/converge":
			w.WriteHeader(http.StatusAccepted)
			fmt.Fprint(w, `{"success":true,"taskId":"t1","task":{"taskId":"t1","status":"running"}}`)
		case r.Method == http.MethodGet && r.URL.Path == "/api/v1/converge/t1" && polls.Add(1) < 2:
			fmt.Fprint(w, `{"success":true,"taskId":"t1","task":{"taskId":"t1","status":"running"}}`)
		case r.Method == http.MethodGet && r.URL.Path == "/api/v1/converge/t1":
			fmt.Fprint(w, `{"success":true,"taskId":"t1","task":{"taskId":"t1","status":"completed","result":{"output":"done","convergenceScore":91}}}`)
		default:
			apiError(w, http.StatusNotFound, "not_found")
		}
	})
	task, err := c.Converge(t.Context(), client.Request{Prompt: "Design a rate limiter"})
	if err != nil {
		t.Fatal(err)
	}
	if task == nil || !task.Finished() || task.Status != "completed" || task.Result.Output != "done" {
		t.Fatalf("task = %+v", task)
	}
	if polls.Load() < 2 {
		t.Errorf("polled %d times, want the running answer and then the finished one", polls.Load())
	}

	// A context that ends first gets the task as it stood, unfinished, to wait for later.
	polls.Store(-1_000_000)
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	running, err := c.Converge(ctx, client.Request{Prompt: "Design a rate limiter"})
	if err != nil || running == nil || running.TaskID != "t1" || running.Finished() {
		t.Fatalf("running: %+v, %v", running, err)
	}

	async, err := c.Converge(t.Context(), client.Request{Prompt: "Design a rate limiter", Async: true})
	if err != nil || async.Status != "running" {
		t.Fatalf("async: %+v, %v: an async converge returns the task as it stands", async, err)
	}
}

func TestWait_ContextCancelled_ReturnsPromptly(t *testing.T) {
	t.Parallel()
	c := newClient(t, func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `{"success":true,"task":{"taskId":"t1","status":"running"}}`)
	})
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.Wait(ctx, "t1")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Wait took %v after its context ended", d)
	}
}

func TestStream_DroppedConnection_ResumesAfterLastRound(t *testing.T) {
	t.Parallel()
	var conns atomic.Int32
	var lastIDs []string
	c := newClient(t, func(w http.ResponseWriter, r *http.Request) {
		lastIDs = append(lastIDs, r.Header.Get("Last-Event-ID"))
		w.Header().Set("Content-Type", "text/event-stream")
		if conns.Add(1) == 1 {
			fmt.Fprint(w, "retry: 10\n\n: keep-alive\n\nevent: round\nid: 1\ndata: {\"round\":1,\"score\":{\"value\":40}}\n\n")
			return // Drop the connection mid-task.
		}
		fmt.Fprint(w, "event: round\nid: 2\ndata: {\"round\":2,\"score\":{\"value\":85}}\n\n")
		fmt.Fprint(w, "event: result\ndata: {\"taskId\":\"t1\",\"status\":\"completed\",\"result\":{\"convergenceScore\":85}}\n\n")
	})
	var got []string
	err := c.Stream(t.Context(), "t1", func(e client.Event) error {
		switch e.Type {
		case "round":
			got = append(got, fmt.Sprintf("round %d score %d", e.Round.Round, e.Round.Score.Value))
		case "result":
			got = append(got, fmt.Sprintf("result %d", e.Task.Result.ConvergenceScore))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := "round 1 score 40|round 2 score 85|result 85"
	if strings.Join(got, "|") != want {
		t.Errorf("events %q, want %q", got, want)
	}
	if len(lastIDs) != 2 || lastIDs[0] != "" || lastIDs[1] != "1" {
		t.Errorf("Last-Event-ID per connection = %q, want [\"\" \"1\"]", lastIDs)
	}
}

func TestStream_HandlerError_Returned(t *testing.T) {
	t.Parallel()
	c := newClient(t, func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "event: round\nid: 1\ndata: {\"round\":1}\n\n")
	})
	stop := errors.New("enough")
	if err := c.Stream(t.Context(), "t1", func(client.Event) error { return stop }); !errors.Is(err, stop) {
		t.Fatalf("err = %v, want the handler's", err)
	}
}

func TestNew_InvalidSettings(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct{ url, key string }{{"localhost:3000", "k"}, {"ftp://x", "k"}, {"http://x", ""}} {
		if _, err := client.New(tt.url, tt.key); err == nil {
			t.Errorf("New(%q, %q) succeeded", tt.url, tt.key)
		}
	}
}

func TestFromEnv(t *testing.T) {
	t.Setenv(client.EnvAPIURL, "")
	if _, err := client.FromEnv(); err == nil || !strings.Contains(err.Error(), client.EnvAPIURL) {
		t.Fatalf("err = %v, want one naming %s", err, client.EnvAPIURL)
	}
	t.Setenv(client.EnvAPIURL, "http://platform:3000")
	t.Setenv(client.EnvAPIKey, "sk_tenant_x")
	if _, err := client.FromEnv(); err != nil {
		t.Fatal(err)
	}

	// The key as a file, as the provisioner gives it, wins over the variable.
	var seen string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen = r.Header.Get("Authorization")
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"success":true,"task":{"taskId":"tsk_1","status":"queued"}}`)
	}))
	defer srv.Close()
	file := filepath.Join(t.TempDir(), "api-key")
	if err := os.WriteFile(file, []byte("sk_tenant_from_file\n"), 0o400); err != nil {
		t.Fatal(err)
	}
	t.Setenv(client.EnvAPIURL, srv.URL)
	t.Setenv(client.EnvAPIKeyFile, file)
	c, err := client.FromEnv()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Task(t.Context(), "tsk_1"); err != nil {
		t.Fatal(err)
	}
	if seen != "Bearer sk_tenant_from_file" {
		t.Fatalf("Authorization = %q, want the key from the file", seen)
	}
	t.Setenv(client.EnvAPIKeyFile, filepath.Join(t.TempDir(), "missing"))
	if _, err := client.FromEnv(); err == nil || !strings.Contains(err.Error(), client.EnvAPIKeyFile) {
		t.Fatalf("err = %v, want one naming %s", err, client.EnvAPIKeyFile)
	}
}

// TestFromEnv_KeyFileReplaced_CallsUseTheNewKey follows a key rotation as a tenant container
// sees it: the platform replaces the key file, and the client sends the new key without a
// restart, at once when the old key was refused.
func TestFromEnv_KeyFileReplaced_CallsUseTheNewKey(t *testing.T) {
	var accepted atomic.Value
	var seen []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		auth := r.Header.Get("Authorization")
		seen = append(seen, strings.TrimPrefix(auth, "Bearer "))
		if !slices.Contains(accepted.Load().([]string), strings.TrimPrefix(auth, "Bearer ")) {
			apiError(w, http.StatusUnauthorized, "unauthorized")
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"success":true,"task":{"taskId":"tsk_1","status":"queued"}}`)
	}))
	defer srv.Close()
	dir := t.TempDir()
	file := filepath.Join(dir, "api-key")
	write := func(key string) {
		t.Helper()
		// As the engine does: the old file goes and a new one is made.
		_ = os.Remove(file)
		if err := os.WriteFile(file, []byte(key+"\n"), 0o400); err != nil {
			t.Fatal(err)
		}
	}
	write("sk_tenant_old")
	accepted.Store([]string{"sk_tenant_old"})
	t.Setenv(client.EnvAPIURL, srv.URL)
	t.Setenv(client.EnvAPIKeyFile, file)
	c, err := client.FromEnv()
	if err != nil {
		t.Fatal(err)
	}
	task := func() error {
		_, err := c.Task(t.Context(), "tsk_1")
		return err
	}

	// The old key is refused at once (a rotation without overlap): the refused call is sent
	// again with the new key from the file.
	write("sk_tenant_new")
	accepted.Store([]string{"sk_tenant_new"})
	if err := task(); err != nil {
		t.Fatal(err)
	}
	if want := []string{"sk_tenant_old", "sk_tenant_new"}; !slices.Equal(seen, want) {
		t.Fatalf("keys sent %q, want %q", seen, want)
	}

	// With an overlap both keys work; the next look at the file, a second later, moves the
	// client to the new key.
	write("sk_tenant_newest")
	accepted.Store([]string{"sk_tenant_new", "sk_tenant_newest"})
	seen = nil
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) && !slices.Contains(seen, "sk_tenant_newest") {
		if err := task(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !slices.Contains(seen, "sk_tenant_newest") {
		t.Fatalf("keys sent %q: never the new one", seen)
	}

	// A new file of the same size with the same modification time, as a copy made within the
	// same second leaves it (tar keeps whole seconds): the client still moves to its key.
	st, err := os.Stat(file)
	if err != nil {
		t.Fatal(err)
	}
	write("sk_tenant_newes2")
	if err := os.Chtimes(file, st.ModTime(), st.ModTime()); err != nil {
		t.Fatal(err)
	}
	accepted.Store([]string{"sk_tenant_newest", "sk_tenant_newes2"})
	seen = nil
	for time.Now().Before(deadline.Add(10*time.Second)) && !slices.Contains(seen, "sk_tenant_newes2") {
		if err := task(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !slices.Contains(seen, "sk_tenant_newes2") {
		t.Fatalf("keys sent %q: never the key of the file that kept its size and time", seen)
	}

	// A file being replaced (gone for a moment) leaves the key as it was; a refused key whose
	// file did not change is the caller's error, sent once.
	if err := os.Remove(file); err != nil {
		t.Fatal(err)
	}
	accepted.Store([]string{"sk_tenant_newes2"})
	time.Sleep(1100 * time.Millisecond)
	if err := task(); err != nil {
		t.Fatal(err)
	}
	write("sk_tenant_newes2")
	accepted.Store([]string{"sk_tenant_other"})
	seen = nil
	var apiErr *client.ClientError
	if err := task(); !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusUnauthorized || len(seen) != 1 {
		t.Fatalf("err = %v after %d requests, want one 401", err, len(seen))
	}
}

func TestVerifyWebhook_RefusesWhatItCannotCheck(t *testing.T) {
	t.Parallel()
	now := strconv.FormatInt(time.Now().Unix(), 10)
	for name, h := range map[string]http.Header{
		"no headers":        {},
		"bad timestamp":     {"Webhook-Id": {"msg_1"}, "Webhook-Timestamp": {"soon"}, "Webhook-Signature": {"v1,AAAA"}},
		"unknown version":   {"Webhook-Id": {"msg_1"}, "Webhook-Timestamp": {now}, "Webhook-Signature": {"v2,AAAA"}},
		"signature garbled": {"Webhook-Id": {"msg_1"}, "Webhook-Timestamp": {now}, "Webhook-Signature": {"v1,not base64!"}},
	} {
		if err := client.VerifyWebhook(h, []byte(`{}`), 0, "whsec_c2VjcmV0"); !errors.Is(err, client.ErrWebhookSignature) {
			t.Errorf("%s: %v, want ErrWebhookSignature", name, err)
		}
	}
}

func TestCalls_CarryTheRequestIDAndIdempotencyKeyOfTheirContext(t *testing.T) {
	t.Parallel()
	var got []string
	c := newClient(t, func(w http.ResponseWriter, r *http.Request) {
		got = append(got, r.Header.Get("X-Request-ID"), r.Header.Get("Idempotency-Key"))
		w.WriteHeader(http.StatusOK)
		_, _ = io.WriteString(w, `{"success":true,"taskId":"tsk_1","task":{"taskId":"tsk_1","status":"completed"}}`)
	})
	ctx := client.WithIdempotencyKey(client.WithRequestID(t.Context(), "req-from-the-app"), "key-from-the-caller")
	if _, err := c.Converge(ctx, client.Request{Prompt: "p"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Converge(t.Context(), client.Request{Prompt: "p"}); err != nil {
		t.Fatal(err)
	}
	if got[0] != "req-from-the-app" || got[1] != "key-from-the-caller" {
		t.Errorf("X-Request-ID %q, Idempotency-Key %q: want the context's", got[0], got[1])
	}
	if got[2] == "" || got[3] == "" || got[2] == got[0] || got[3] == got[1] {
		t.Errorf("without them in the context a call makes its own: %q", got[2:])
	}
}
