package main

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/convergence-dev/convergence/pkg/client"
)

// fakePlatform speaks the platform's wire format: the task answer and the error envelope.
type fakePlatform struct {
	mu       sync.Mutex
	requests []recorded
	answer   func(w http.ResponseWriter, r *http.Request)
}

type recorded struct {
	Method, Path, Auth        string
	RequestID, IdempotencyKey string
	Body                      map[string]any
}

func (f *fakePlatform) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rec := recorded{Method: r.Method, Path: r.URL.Path, Auth: r.Header.Get("Authorization"),
		RequestID: r.Header.Get("X-Request-ID"), IdempotencyKey: r.Header.Get("Idempotency-Key")}
	if b, _ := io.ReadAll(r.Body); len(b) > 0 {
		_ = json.Unmarshal(b, &rec.Body)
	}
	f.mu.Lock()
	f.requests = append(f.requests, rec)
	f.mu.Unlock()
	f.answer(w, r)
}

func (f *fakePlatform) last(t *testing.T) recorded {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	require.NotEmpty(t, f.requests, "the app called the platform")
	return f.requests[len(f.requests)-1]
}

func (f *fakePlatform) calls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.requests)
}

const finishedTask = `{"success":true,"taskId":"t1","task":{"taskId":"t1","status":"completed","type":"%s",
	"agentARole":"Security Expert","agentBRole":"UX Designer","maxRounds":5,"roundsCompleted":3,
	"result":{"converged":true,"stopReason":"converged","convergenceScore":87,"output":"the design"}}}`

func apiError(w http.ResponseWriter, status int, code, message string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	fmt.Fprintf(w, `{"success":false,"error":{"code":%q,"message":%q,"requestId":"req-1"}}`, code, message)
}

// newApp serves the app against a fake platform that answers with answer.
func newApp(t *testing.T, answer func(w http.ResponseWriter, r *http.Request)) (*httptest.Server, *fakePlatform) {
	t.Helper()
	fake := &fakePlatform{answer: answer}
	platform := httptest.NewServer(fake)
	t.Cleanup(platform.Close)
	c, err := client.New(platform.URL, "sk_tenant_key", client.WithRetries(0, time.Second))
	require.NoError(t, err)
	app := httptest.NewServer(newHandler(c, slog.New(slog.DiscardHandler)))
	t.Cleanup(app.Close)
	return app, fake
}

type answer struct {
	Status int
	Header http.Header
	Body   map[string]any
}

func post(t *testing.T, url, contentType, body string) answer {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, url, strings.NewReader(body))
	require.NoError(t, err)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	return do(t, req)
}

func get(t *testing.T, url string) answer {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	require.NoError(t, err)
	return do(t, req)
}

func do(t *testing.T, req *http.Request) answer {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	a := answer{Status: resp.StatusCode, Header: resp.Header}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&a.Body))
	require.Equal(t, "application/json", resp.Header.Get("Content-Type"))
	return a
}

func errorCode(a answer) string {
	e, _ := a.Body["error"].(map[string]any)
	s, _ := e["code"].(string)
	return s
}

func errorMessage(a answer) string {
	e, _ := a.Body["error"].(map[string]any)
	s, _ := e["message"].(string)
	return s
}

func TestConverge_ForwardsRequestWithTenantKey_AnswersScore(t *testing.T) {
	t.Parallel()
	app, fake := newApp(t, func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintf(w, finishedTask, "custom")
	})
	a := post(t, app.URL+"/api/converge", "application/json",
		`{"prompt":"A password reset flow","agentARole":"Security Expert","agentBRole":"UX Designer","context":"a bank","maxRounds":5}`)
	require.Equal(t, http.StatusOK, a.Status)
	require.InDelta(t, 87, a.Body["convergenceScore"], 0)
	require.Equal(t, "completed", a.Body["status"])
	require.Equal(t, "t1", a.Body["taskId"])
	require.Equal(t, "the design", a.Body["output"])

	got := fake.last(t)
	require.Equal(t, http.MethodPost, got.Method)
	require.Equal(t, "/api/v1/converge", got.Path)
	require.Equal(t, "Bearer sk_tenant_key", got.Auth)
	require.Equal(t, map[string]any{
		"prompt": "A password reset flow", "agentARole": "Security Expert", "agentBRole": "UX Designer",
		"context": "a bank", "maxRounds": float64(5),
	}, got.Body)
}

func TestConverge_PassesOnTheTaskSettingsRequestIDAndIdempotencyKey(t *testing.T) {
	t.Parallel()
	app, fake := newApp(t, func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintf(w, finishedTask, "design")
	})
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, app.URL+"/api/design", strings.NewReader(
		`{"prompt":"A cache","model":"gpt-4o-mini","webhookUrl":"https://example.com/hook","tokenBudget":5000,"timeoutSeconds":90}`))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Request-ID", "req-7")
	req.Header.Set("Idempotency-Key", "order-42")
	require.Equal(t, http.StatusOK, do(t, req).Status)

	got := fake.last(t)
	require.Equal(t, map[string]any{
		"prompt": "A cache", "type": "design", "model": "gpt-4o-mini", "webhookUrl": "https://example.com/hook",
		"tokenBudget": float64(5000), "timeoutSeconds": float64(90),
	}, got.Body)
	require.Equal(t, "req-7", got.RequestID)
	require.Equal(t, "order-42", got.IdempotencyKey)
}

func TestShortcuts_SetTheTaskType(t *testing.T) {
	t.Parallel()
	for _, typ := range []string{client.TypeDesign, client.TypeReview, client.TypeDecide} {
		app, fake := newApp(t, func(w http.ResponseWriter, _ *http.Request) {
			fmt.Fprintf(w, finishedTask, typ)
		})
		a := post(t, app.URL+"/api/"+typ, "", `{"prompt":"p"}`)
		require.Equal(t, http.StatusOK, a.Status, typ)
		require.Equal(t, typ, fake.last(t).Body["type"], typ)

		a = post(t, app.URL+"/api/"+typ, "", `{"prompt":"p","type":"plan"}`)
		require.Equal(t, http.StatusBadRequest, a.Status, typ)
		require.Contains(t, errorMessage(a), `"type" "plan" does not fit this endpoint`)
	}
}

func TestConverge_Async_Answers202WithLocation(t *testing.T) {
	t.Parallel()
	app, fake := newApp(t, func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusAccepted)
		fmt.Fprint(w, `{"success":true,"taskId":"t2","task":{"taskId":"t2","status":"queued"}}`)
	})
	a := post(t, app.URL+"/api/converge", "application/json", `{"prompt":"p","async":true}`)
	require.Equal(t, http.StatusAccepted, a.Status)
	require.Equal(t, "/api/converge/t2", a.Header.Get("Location"))
	require.Nil(t, a.Body["convergenceScore"], "no score before the task has finished")
	require.Equal(t, true, fake.last(t).Body["async"])
}

func TestConverge_BadBodies_400WithoutCallingPlatform(t *testing.T) {
	t.Parallel()
	app, fake := newApp(t, func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintf(w, finishedTask, "custom")
	})
	tests := []struct {
		name, contentType, body string
		status                  int
		message                 string
	}{
		{"empty body", "application/json", ``, http.StatusBadRequest, "the body is empty"},
		{"not JSON", "application/json", `prompt=x`, http.StatusBadRequest, "not a valid request"},
		{"unknown field", "application/json", `{"prompt":"p","roleA":"x"}`, http.StatusBadRequest, `unknown field "roleA"`},
		{"two values", "application/json", `{"prompt":"p"}{}`, http.StatusBadRequest, "more than one JSON value"},
		{"no prompt", "application/json", `{"agentARole":"a"}`, http.StatusBadRequest, `"prompt" is required`},
		{"blank prompt", "", `{"prompt":"  "}`, http.StatusBadRequest, `"prompt" is required`},
		{"negative rounds", "", `{"prompt":"p","maxRounds":-1}`, http.StatusBadRequest, `"maxRounds" -1 must not be negative`},
		{"wrong type", "", `{"prompt":"p","maxRounds":"5"}`, http.StatusBadRequest, "not a valid request"},
		{"form", "application/x-www-form-urlencoded", `prompt=p`, http.StatusUnsupportedMediaType, "send a JSON body"},
		{"too large", "", `{"prompt":"` + strings.Repeat("x", maxBodyBytes) + `"}`, http.StatusRequestEntityTooLarge, "the limit is"},
	}
	for _, tt := range tests {
		a := post(t, app.URL+"/api/converge", tt.contentType, tt.body)
		require.Equal(t, tt.status, a.Status, tt.name)
		require.Contains(t, errorMessage(a), tt.message, tt.name)
		require.Equal(t, false, a.Body["success"], tt.name)
	}
	require.Zero(t, fake.calls(), "no bad request reaches the platform")
}

func TestConverge_PlatformErrors_MappedByType(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		answer     func(w http.ResponseWriter, r *http.Request)
		status     int
		code       string
		retryAfter string
	}{
		{"400 passed through", func(w http.ResponseWriter, _ *http.Request) {
			apiError(w, http.StatusBadRequest, "invalid_request", "maxRounds 99 is out of range")
		}, http.StatusBadRequest, "invalid_request", ""},
		{"401 passed through", func(w http.ResponseWriter, _ *http.Request) {
			apiError(w, http.StatusUnauthorized, "unauthorized", "invalid API key")
		}, http.StatusUnauthorized, "unauthorized", ""},
		{"429 with Retry-After", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Retry-After", "7")
			apiError(w, http.StatusTooManyRequests, "rate_limited", "too many task creations")
		}, http.StatusTooManyRequests, "rate_limited", "7"},
		{"500 as 502", func(w http.ResponseWriter, _ *http.Request) {
			apiError(w, http.StatusInternalServerError, "internal", "internal error")
		}, http.StatusBadGateway, "upstream_error", ""},
		{"non-JSON 503 as 502", func(w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprint(w, "<html>bad gateway</html>")
		}, http.StatusBadGateway, "upstream_error", ""},
	}
	for _, tt := range tests {
		app, _ := newApp(t, tt.answer)
		a := post(t, app.URL+"/api/converge", "application/json", `{"prompt":"p"}`)
		require.Equal(t, tt.status, a.Status, tt.name)
		require.Equal(t, tt.code, errorCode(a), tt.name)
		require.Equal(t, tt.retryAfter, a.Header.Get("Retry-After"), tt.name)
		if tt.status < 500 {
			require.Equal(t, "req-1", a.Body["error"].(map[string]any)["requestId"], tt.name)
		}
	}
}

func TestConverge_PlatformDown_502(t *testing.T) {
	t.Parallel()
	c, err := client.New("http://127.0.0.1:1", "sk_tenant_key", client.WithRetries(0, time.Second))
	require.NoError(t, err)
	app := httptest.NewServer(newHandler(c, slog.New(slog.DiscardHandler)))
	t.Cleanup(app.Close)
	a := post(t, app.URL+"/api/converge", "", `{"prompt":"p"}`)
	require.Equal(t, http.StatusBadGateway, a.Status)
	require.Equal(t, "upstream_unreachable", errorCode(a))
}

func TestTask_ReadsThePlatformsTask(t *testing.T) {
	t.Parallel()
	app, fake := newApp(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/api/v1/converge/missing" {
			apiError(w, http.StatusNotFound, "not_found", "task missing not found")
			return
		}
		fmt.Fprintf(w, finishedTask, "design")
	})
	a := get(t, app.URL+"/api/converge/t1")
	require.Equal(t, http.StatusOK, a.Status)
	require.InDelta(t, 87, a.Body["convergenceScore"], 0)
	require.Equal(t, "/api/v1/converge/t1", fake.last(t).Path)
	require.Equal(t, http.MethodGet, fake.last(t).Method)

	a = get(t, app.URL+"/api/converge/missing")
	require.Equal(t, http.StatusNotFound, a.Status)
	require.Equal(t, "not_found", errorCode(a))
}

func TestAPI_NotConfigured_503AndHealthStillAnswers(t *testing.T) {
	t.Parallel()
	app := httptest.NewServer(newHandler(nil, slog.New(slog.DiscardHandler)))
	t.Cleanup(app.Close)
	a := post(t, app.URL+"/api/converge", "", `{"prompt":"p"}`)
	require.Equal(t, http.StatusServiceUnavailable, a.Status)
	require.Contains(t, errorMessage(a), client.EnvAPIURL)
	require.NoError(t, probe(t.Context(), app.URL+"/health"))
}
