package client

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/convergence-dev/convergence/pkg/api"
)

// Client calls the Convergence API with a tenant API key. It is safe for concurrent use.
type Client struct {
	base       *url.URL
	apiKey     string
	keyFile    *keyFile // when set, the key comes from it instead of apiKey
	envID      string
	http       *http.Client
	maxRetries int
	maxWait    time.Duration
	userAgent  string
}

// Option configures a Client.
type Option func(*Client)

// WithHTTPClient sets the HTTP client. Its Timeout, if any, bounds each attempt; the context
// of each call bounds the whole call.
func WithHTTPClient(h *http.Client) Option { return func(c *Client) { c.http = h } }

// WithRetries sets how many times a call answered 429 or 503 is retried (default 3), and the
// longest single wait the client accepts (default 30s): an API that asks for a longer wait
// gets the error at once.
func WithRetries(n int, maxWait time.Duration) Option {
	return func(c *Client) { c.maxRetries, c.maxWait = n, maxWait }
}

// WithUserAgent sets the User-Agent header.
func WithUserAgent(ua string) Option { return func(c *Client) { c.userAgent = ua } }

// WithEnvID records the tenant's environment ID, for logs; the API knows it from the key.
func WithEnvID(id string) Option { return func(c *Client) { c.envID = id } }

// Environment variables FromEnv reads. The provisioner sets every one but EnvAPIKey in every
// tenant container: the key is a file there, which EnvAPIKeyFile names.
const (
	EnvAPIURL     = "CONVERGENCE_API_URL"
	EnvAPIKey     = "CONVERGENCE_API_KEY"
	EnvAPIKeyFile = "CONVERGENCE_API_KEY_FILE"
	EnvEnvID      = "CONVERGENCE_ENV_ID"
)

// New returns a client for the API at baseURL (such as http://localhost:3000) with a tenant
// API key.
func New(baseURL, apiKey string, opts ...Option) (*Client, error) {
	u, err := url.Parse(strings.TrimRight(baseURL, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("convergence: API URL %q must be an absolute http(s) URL", baseURL)
	}
	if apiKey == "" {
		return nil, errors.New("convergence: no API key")
	}
	c := &Client{
		base:       u,
		apiKey:     apiKey,
		http:       &http.Client{Timeout: 10 * time.Minute},
		maxRetries: 3,
		maxWait:    30 * time.Second,
		userAgent:  "convergence-go-client",
	}
	for _, o := range opts {
		o(c)
	}
	return c, nil
}

// FromEnv returns a client configured from CONVERGENCE_API_URL, the key in the file
// CONVERGENCE_API_KEY_FILE names (or else CONVERGENCE_API_KEY) and CONVERGENCE_ENV_ID, with
// opts applied after them. A key file is read again when it changes, so the client follows the
// platform's key rotations without a restart.
func FromEnv(opts ...Option) (*Client, error) {
	base, key := os.Getenv(EnvAPIURL), os.Getenv(EnvAPIKey)
	var kf *keyFile
	if path := os.Getenv(EnvAPIKeyFile); path != "" {
		var err error
		if kf, err = readKeyFile(path); err != nil {
			return nil, fmt.Errorf("convergence: read the API key file %s: %w", EnvAPIKeyFile, err)
		}
		key = kf.key
	}
	if base == "" || key == "" {
		return nil, fmt.Errorf("convergence: set %s, and %s (or %s)", EnvAPIURL, EnvAPIKeyFile, EnvAPIKey)
	}
	c, err := New(base, key, append([]Option{WithEnvID(os.Getenv(EnvEnvID))}, opts...)...)
	if err != nil {
		return nil, err
	}
	c.keyFile = kf
	return c, nil
}

// key is the API key to send now.
func (c *Client) key() string {
	if c.keyFile != nil {
		return c.keyFile.current()
	}
	return c.apiKey
}

// call sends one API request, retrying 429 and 503 answers, and decodes a success answer's
// body into out (when out is not nil).
func (c *Client) call(ctx context.Context, method, path string, in, out any) error {
	var body []byte
	if in != nil {
		var err error
		if body, err = json.Marshal(in); err != nil {
			return fmt.Errorf("convergence: encode request: %w", err)
		}
	}
	requestID, idempotencyKey := callIDs(ctx)
	rekeyed := false
	for attempt := 0; ; attempt++ {
		resp, err := c.send(ctx, method, path, body, requestID, idempotencyKey, "application/json")
		if err != nil {
			return err
		}
		apiErr, retryAfter, err := c.read(resp, out)
		if err != nil || apiErr == nil {
			return err
		}
		if apiErr.StatusCode == http.StatusUnauthorized && !rekeyed && c.keyFile != nil && c.keyFile.refresh() {
			rekeyed = true // The key file changed since the last look: try the new key once.
			continue
		}
		retryable := apiErr.StatusCode == http.StatusTooManyRequests || apiErr.StatusCode == http.StatusServiceUnavailable
		if !retryable || attempt >= c.maxRetries {
			return typed(apiErr, retryAfter)
		}
		wait := retryAfter
		if wait <= 0 {
			wait = time.Duration(250<<attempt) * time.Millisecond
		}
		if wait > c.maxWait {
			return typed(apiErr, retryAfter)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

func (c *Client) send(ctx context.Context, method, path string, body []byte, requestID, idempotencyKey, accept string) (*http.Response, error) {
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base.String()+path, r)
	if err != nil {
		return nil, fmt.Errorf("convergence: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+c.key())
	req.Header.Set("X-Request-ID", requestID)
	if method == http.MethodPost {
		// The key is kept across a call's retries, so the platform runs a retried create once.
		req.Header.Set("Idempotency-Key", idempotencyKey)
	}
	req.Header.Set("Accept", accept)
	req.Header.Set("User-Agent", c.userAgent)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("convergence: %s %s: %w", method, path, err)
	}
	return resp, nil
}

// read consumes resp: a success answer is decoded into out; an error answer is returned as an
// *APIError with the Retry-After it carried.
func (c *Client) read(resp *http.Response, out any) (*APIError, time.Duration, error) {
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, 0, fmt.Errorf("convergence: read answer: %w", err)
	}
	if resp.StatusCode < 300 {
		if out == nil {
			return nil, 0, nil
		}
		if err := json.Unmarshal(raw, out); err != nil {
			return nil, 0, fmt.Errorf("convergence: decode answer: %w", err)
		}
		return nil, 0, nil
	}
	var envelope api.Error
	_ = json.Unmarshal(raw, &envelope) // A proxy's error page is not JSON; the status still tells.
	e := &APIError{
		StatusCode: resp.StatusCode,
		Code:       envelope.Error.Code,
		Message:    envelope.Error.Message,
		RequestID:  envelope.Error.RequestID,
	}
	if e.Message == "" {
		e.Message = http.StatusText(resp.StatusCode)
	}
	if e.RequestID == "" {
		e.RequestID = resp.Header.Get("X-Request-ID")
	}
	return e, retryAfter(resp.Header.Get("Retry-After")), nil
}

// retryAfter parses a Retry-After header in seconds or as an HTTP date.
func retryAfter(v string) time.Duration {
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(v); err == nil && s >= 0 {
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(time.Until(t), 0)
	}
	return 0
}

type callKey int

const (
	requestIDKey callKey = iota
	idempotencyKeyKey
)

// WithRequestID returns ctx with the X-Request-ID the calls made with it send: an app passes
// on the request id of the request it serves, so one id follows it into the platform's logs.
func WithRequestID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, requestIDKey, id)
}

// WithIdempotencyKey returns ctx with the Idempotency-Key a create made with it sends: an app
// passes on its own caller's key, so the caller's retries run the task once.
func WithIdempotencyKey(ctx context.Context, key string) context.Context {
	return context.WithValue(ctx, idempotencyKeyKey, key)
}

// callIDs are the request id and idempotency key of a call made with ctx: ctx's, or new ones.
// Each is kept across the call's retries.
func callIDs(ctx context.Context) (requestID, idempotencyKey string) {
	requestID, _ = ctx.Value(requestIDKey).(string)
	if requestID == "" {
		requestID = newRequestID()
	}
	idempotencyKey, _ = ctx.Value(idempotencyKeyKey).(string)
	if idempotencyKey == "" {
		idempotencyKey = newRequestID()
	}
	return requestID, idempotencyKey
}

func newRequestID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
