package client

import (
	"fmt"
	"time"
)

// APIError is an error answer of the API.
type APIError struct {
	StatusCode int
	// Code is the API's machine-readable code, such as "invalid_request" or "not_found".
	Code    string
	Message string
	// RequestID identifies the request in the platform's logs; quote it when reporting.
	RequestID string
}

func (e *APIError) Error() string {
	return fmt.Sprintf("convergence: %d %s: %s (request %s)", e.StatusCode, e.Code, e.Message, e.RequestID)
}

// ClientError is a 4xx answer other than 429: the request was wrong (400, 413), the key is
// not valid (401, 403), or the task is not there (404). Retrying it unchanged will not help.
type ClientError struct{ *APIError }

func (e *ClientError) Unwrap() error { return e.APIError }

// RateLimitError is a 429 answer that was still 429 after the client's retries.
type RateLimitError struct {
	*APIError
	// RetryAfter is how long the API asked to wait.
	RetryAfter time.Duration
}

func (e *RateLimitError) Unwrap() error { return e.APIError }

// ServerError is a 5xx answer: the platform failed or a dependency is down.
type ServerError struct {
	*APIError
	RetryAfter time.Duration
}

func (e *ServerError) Unwrap() error { return e.APIError }

func typed(e *APIError, retryAfter time.Duration) error {
	switch {
	case e.StatusCode == 429:
		return &RateLimitError{APIError: e, RetryAfter: retryAfter}
	case e.StatusCode >= 500:
		return &ServerError{APIError: e, RetryAfter: retryAfter}
	default:
		return &ClientError{APIError: e}
	}
}
