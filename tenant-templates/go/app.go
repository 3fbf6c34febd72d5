package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/convergence-dev/convergence/pkg/api"
	"github.com/convergence-dev/convergence/pkg/client"
)

// Limits of the app's own API.
const (
	// maxBodyBytes bounds a request body. The platform bounds its own (1 MiB by default);
	// a prompt with its context fits well below this.
	maxBodyBytes = 256 << 10
	// callTimeout bounds one call to the platform. A synchronous convergence waits for its
	// result there for up to a minute by default, then answers with the task still running.
	callTimeout = 2 * time.Minute
)

// Platform is the part of the SDK the app uses; *client.Client implements it.
type Platform interface {
	Converge(ctx context.Context, req client.Request) (*client.Task, error)
	Task(ctx context.Context, taskID string) (*client.Task, error)
}

// app serves the tenant's API on top of the platform.
type app struct {
	platform Platform
	log      *slog.Logger
}

// taskAnswer is the app's answer about one task: the task as the platform shows it, with its
// score and output lifted to the top once it has finished.
type taskAnswer struct {
	Success          bool         `json:"success"`
	TaskID           string       `json:"taskId"`
	Status           string       `json:"status"`
	ConvergenceScore *int         `json:"convergenceScore"`
	Converged        *bool        `json:"converged,omitempty"`
	StopReason       string       `json:"stopReason,omitempty"`
	Output           string       `json:"output,omitempty"`
	Task             *client.Task `json:"task"`
}

// errorAnswer is the app's error envelope; it has the platform's shape, so a caller reads
// both the same way.
type errorAnswer struct {
	Success bool      `json:"success"`
	Error   errorInfo `json:"error"`
}

type errorInfo struct {
	Code      string `json:"code"`
	Message   string `json:"message"`
	RequestID string `json:"requestId,omitempty"`
}

// routes registers the app's API on mux. With a nil platform (the environment did not say
// where the platform is) the API routes answer 503 and /health still answers.
func (a *app) routes(mux *http.ServeMux) {
	mux.HandleFunc("POST /api/converge", a.converge(""))
	mux.HandleFunc("POST /api/design", a.converge(client.TypeDesign))
	mux.HandleFunc("POST /api/review", a.converge(client.TypeReview))
	mux.HandleFunc("POST /api/decide", a.converge(client.TypeDecide))
	mux.HandleFunc("GET /api/converge/{taskId}", a.task)
}

// converge forwards a convergence request of type typ ("" lets the body choose) to the
// platform with the tenant's key, and answers the task: 200 once it has finished, 202 while
// it runs (an async request, or a sync one that outlasted the platform's wait).
func (a *app) converge(typ string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if a.platform == nil {
			notConfigured(w)
			return
		}
		// The body is the platform's own request: model, webhookUrl, tokenBudget and
		// timeoutSeconds are passed on as they are, and the platform checks them.
		var in client.Request
		if !decodeJSON(w, r, &in) {
			return
		}
		if msg := problem(in, typ); msg != "" {
			writeError(w, http.StatusBadRequest, "invalid_request", msg)
			return
		}
		if typ != "" {
			in.Type = api.ConvergeRequestType(typ)
		}
		ctx, cancel := context.WithTimeout(passOn(r), callTimeout)
		defer cancel()
		task, err := a.platform.Converge(ctx, in)
		if err != nil {
			a.platformError(w, r, err)
			return
		}
		a.writeTask(w, task)
	}
}

// passOn is r's context with its caller's X-Request-ID and Idempotency-Key, when it has them,
// for the calls made for it: the request id follows the request into the platform's logs, and
// the caller's retries of a create run one task. Values the platform would refuse are left
// out; the SDK then makes its own.
func passOn(r *http.Request) context.Context {
	ctx := r.Context()
	if id := r.Header.Get("X-Request-ID"); printable(id, 128) {
		ctx = client.WithRequestID(ctx, id)
	}
	if key := r.Header.Get("Idempotency-Key"); printable(key, 255) {
		ctx = client.WithIdempotencyKey(ctx, key)
	}
	return ctx
}

// printable reports whether s is 1 to max printable ASCII characters.
func printable(s string, max int) bool {
	if s == "" || len(s) > max {
		return false
	}
	for i := range len(s) {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// problem says what is wrong with the body b of an endpoint of type typ, or "" when nothing is.
// The platform checks the rest (role and prompt lengths, the bound on rounds) and its 400 is
// passed through.
func problem(b client.Request, typ string) string {
	var p []string
	if strings.TrimSpace(b.Prompt) == "" {
		p = append(p, `"prompt" is required: say what the two agents should converge on`)
	}
	if b.MaxRounds < 0 {
		p = append(p, fmt.Sprintf(`"maxRounds" %d must not be negative; leave it out for the platform's default`, b.MaxRounds))
	}
	if typ != "" && b.Type != "" && string(b.Type) != typ {
		p = append(p, fmt.Sprintf(`"type" %q does not fit this endpoint, which asks for %s; leave "type" out, or use POST /api/converge`, b.Type, typ))
	}
	return strings.Join(p, "; ")
}

// task answers GET /api/converge/{taskId}: the task as it stands.
func (a *app) task(w http.ResponseWriter, r *http.Request) {
	if a.platform == nil {
		notConfigured(w)
		return
	}
	id := r.PathValue("taskId")
	if id == "" || len(id) > 128 {
		writeError(w, http.StatusBadRequest, "invalid_request", "the task ID in the path is missing or too long; use the taskId a POST /api/converge answered")
		return
	}
	ctx, cancel := context.WithTimeout(passOn(r), 30*time.Second)
	defer cancel()
	task, err := a.platform.Task(ctx, id)
	if err != nil {
		a.platformError(w, r, err)
		return
	}
	a.writeTask(w, task)
}

func (a *app) writeTask(w http.ResponseWriter, t *client.Task) {
	ans := taskAnswer{Success: true, TaskID: t.TaskID, Status: string(t.Status), Task: t}
	if t.Finished() {
		res := t.Result
		score, converged := res.ConvergenceScore, res.Converged
		ans.ConvergenceScore, ans.Converged = &score, &converged
		ans.StopReason, ans.Output = string(res.StopReason), res.Output
	}
	status := http.StatusOK
	if !t.Finished() {
		status = http.StatusAccepted
		w.Header().Set("Location", "/api/converge/"+t.TaskID)
	}
	writeJSON(w, status, ans)
}

// platformError answers an error of the SDK: the platform's 4xx with its code and message (a
// 429 with its Retry-After), a 5xx or an unreachable platform as 502, and nothing at all when
// the caller went away.
func (a *app) platformError(w http.ResponseWriter, r *http.Request, err error) {
	var (
		clientErr *client.ClientError
		rateErr   *client.RateLimitError
		serverErr *client.ServerError
	)
	switch {
	case r.Context().Err() != nil:
		// The caller left; no one reads an answer.
	case errors.As(err, &rateErr):
		secs := int(math.Ceil(rateErr.RetryAfter.Seconds()))
		w.Header().Set("Retry-After", strconv.Itoa(max(secs, 1)))
		writeAPIError(w, http.StatusTooManyRequests, rateErr.APIError)
	case errors.As(err, &clientErr):
		writeAPIError(w, clientErr.StatusCode, clientErr.APIError)
	case errors.As(err, &serverErr):
		a.log.Warn("platform error", "status", serverErr.StatusCode, "code", serverErr.Code, "request_id", serverErr.RequestID)
		writeError(w, http.StatusBadGateway, "upstream_error",
			fmt.Sprintf("the Convergence platform answered %d (%s); retry later, quoting request %s if it persists", serverErr.StatusCode, serverErr.Message, serverErr.RequestID))
	case errors.Is(err, context.DeadlineExceeded):
		writeError(w, http.StatusGatewayTimeout, "upstream_timeout",
			fmt.Sprintf("the Convergence platform did not answer within %s; send the request with \"async\": true and poll GET /api/converge/{taskId}", callTimeout))
	default:
		a.log.Warn("platform unreachable", "err", err)
		writeError(w, http.StatusBadGateway, "upstream_unreachable", "the Convergence platform could not be reached; retry later")
	}
}

func notConfigured(w http.ResponseWriter) {
	writeError(w, http.StatusServiceUnavailable, "not_configured",
		"this app does not know the platform: set "+client.EnvAPIURL+" and "+client.EnvAPIKeyFile+" (the provisioner sets both in every tenant container)")
}

// decodeJSON reads r's body, at most maxBodyBytes of one JSON object with known fields only,
// into v. It answers the error itself and reports false when the body is not acceptable.
func decodeJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
			writeError(w, http.StatusUnsupportedMediaType, "unsupported_media_type", fmt.Sprintf("Content-Type %q: send a JSON body as application/json", ct))
			return false
		}
	}
	if r.ContentLength > maxBodyBytes {
		writeError(w, http.StatusRequestEntityTooLarge, "too_large", fmt.Sprintf("request body is %d bytes; the limit is %d", r.ContentLength, maxBodyBytes))
		return false
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil && dec.Decode(&struct{}{}) != io.EOF {
		err = errors.New("more than one JSON value")
	}
	var tooLarge *http.MaxBytesError
	switch {
	case err == nil:
		return true
	case errors.As(err, &tooLarge):
		writeError(w, http.StatusRequestEntityTooLarge, "too_large", fmt.Sprintf("request body is over the limit of %d bytes", maxBodyBytes))
	case errors.Is(err, io.EOF):
		writeError(w, http.StatusBadRequest, "invalid_request", `the body is empty: send a JSON object such as {"prompt": "...", "agentARole": "...", "agentBRole": "..."}`)
	default:
		writeError(w, http.StatusBadRequest, "invalid_request",
			fmt.Sprintf("the body is not a valid request (%v): send one JSON object with prompt, and optionally agentARole, agentBRole, context, maxRounds, async", err))
	}
	return false
}

func writeAPIError(w http.ResponseWriter, status int, e *client.APIError) {
	writeJSON(w, status, errorAnswer{Error: errorInfo{Code: e.Code, Message: e.Message, RequestID: e.RequestID}})
}

func writeError(w http.ResponseWriter, status int, code, message string) {
	writeJSON(w, status, errorAnswer{Error: errorInfo{Code: code, Message: message}})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
