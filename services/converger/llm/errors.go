package llm

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"
)

// Kinds of provider failure. Every [*Error] matches exactly one of them with errors.Is.
var (
	// ErrRateLimited is a 429: retry after the delay the provider asked for.
	ErrRateLimited = errors.New("rate limited")
	// ErrServer is a 5xx, a 408, or a connection that failed before an answer: retry.
	ErrServer = errors.New("server error")
	// ErrTimeout is a call that outlived its per-call timeout while the caller still waits:
	// retry.
	ErrTimeout = errors.New("call timed out")
	// ErrBadResponse is an answer that arrived but cannot be used: a body that is not the
	// provider's JSON, no choice or tool call, a refusal, or content that is not the JSON
	// object the schema asked for. The call may have been billed; see [Error.Usage]. Asking
	// again may help, so the engine retries it once, but [Retrying] does not.
	ErrBadResponse = errors.New("bad response")
	// ErrPermanent is a request the provider will never accept as sent (400, 401, 403, 404,
	// 413, 422, ...): do not retry.
	ErrPermanent = errors.New("permanent error")
)

// Error is a failed provider call.
type Error struct {
	// Kind is one of ErrRateLimited, ErrServer, ErrTimeout, ErrBadResponse, ErrPermanent.
	Kind error
	// Provider is the provider's Name.
	Provider string
	// StatusCode is the HTTP status, or 0 when there was none.
	StatusCode int
	// RetryAfter is the wait the provider asked for (Retry-After, retry-after-ms), or 0.
	RetryAfter time.Duration
	// Usage is what the failed call was billed, when the provider reported it (a bad
	// response usually was billed; rate limits and server errors are not).
	Usage Usage
	// Err is the underlying cause.
	Err error
}

// Error says which provider failed, how, and why.
func (e *Error) Error() string {
	msg := e.Provider + ": " + e.Kind.Error()
	if e.StatusCode != 0 {
		msg += fmt.Sprintf(" (status %d)", e.StatusCode)
	}
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

// Unwrap returns the kind and the cause, so errors.Is matches both.
func (e *Error) Unwrap() []error {
	if e.Err == nil {
		return []error{e.Kind}
	}
	return []error{e.Kind, e.Err}
}

// Retryable reports whether asking again later may succeed: rate limits, server errors and
// per-call timeouts.
func (e *Error) Retryable() bool {
	return errors.Is(e.Kind, ErrRateLimited) || errors.Is(e.Kind, ErrServer) || errors.Is(e.Kind, ErrTimeout)
}

// KindForStatus maps an HTTP status to the kind of failure it means.
func KindForStatus(status int) error {
	switch {
	case status == http.StatusTooManyRequests:
		return ErrRateLimited
	case status == http.StatusRequestTimeout, status >= 500:
		return ErrServer
	default:
		return ErrPermanent
	}
}

// StatusError builds the [*Error] for an HTTP error answer, reading the wait the provider
// asked for from header (which may be nil).
func StatusError(provider string, status int, header http.Header, cause error) *Error {
	return &Error{
		Kind:       KindForStatus(status),
		Provider:   provider,
		StatusCode: status,
		RetryAfter: RetryAfter(header, time.Now()),
		Err:        cause,
	}
}

// APIFailure is what a provider SDK's API error says: the status, the server's message, and
// the answer's headers (which may be nil).
type APIFailure struct {
	Status  int
	Message string
	Header  http.Header
}

// Classify turns a failed SDK call into an [*Error], from the API error when the SDK decoded
// one (asAPI reports it), else from the HTTP answer when there was one, so servers whose error
// bodies are not shaped as the SDK expects are classified by status all the same. A call
// ended by ctx is returned as it is, wrapped with the provider's name.
func Classify(ctx context.Context, provider string, httpResp *http.Response, err error, asAPI func(error) (APIFailure, bool)) error {
	if ctx.Err() != nil {
		return fmt.Errorf("%s: %w", provider, err)
	}
	if f, ok := asAPI(err); ok {
		cause := errors.New(http.StatusText(f.Status))
		if f.Message != "" {
			cause = fmt.Errorf("%.300s", f.Message)
		}
		return StatusError(provider, f.Status, f.Header, cause)
	}
	switch {
	case httpResp != nil && httpResp.StatusCode >= 400:
		return StatusError(provider, httpResp.StatusCode, httpResp.Header, err)
	case httpResp != nil:
		// The server answered 2xx but the body was not what the SDK expects.
		return &Error{Kind: ErrBadResponse, Provider: provider, Err: err}
	default:
		// No answer at all: connection refused or reset, DNS, TLS.
		return &Error{Kind: ErrServer, Provider: provider, Err: err}
	}
}
