package httpx

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"
)

// Error is an API error: an HTTP status, a stable machine-readable code, and a message saying
// what was wrong and what to do about it. Messages are for callers; they never carry internal
// detail such as SQL or a stack trace.
type Error struct {
	Status  int
	Code    string
	Message string
	// RetryAfter, when positive, is sent as the Retry-After header (429 and 503 answers).
	RetryAfter time.Duration
}

func (e *Error) Error() string { return fmt.Sprintf("%d %s: %s", e.Status, e.Code, e.Message) }

// Errorf returns an *Error with a formatted message.
func Errorf(status int, code, format string, args ...any) *Error {
	return &Error{Status: status, Code: code, Message: fmt.Sprintf(format, args...)}
}

// Common errors.
func BadRequest(format string, args ...any) *Error {
	return Errorf(http.StatusBadRequest, "invalid_request", format, args...)
}

// NotFound says what was not found; it is also the answer for what exists but is not the
// caller's, so a caller cannot probe for other tenants' IDs.
func NotFound(what string) *Error {
	return Errorf(http.StatusNotFound, "not_found", "%s not found", what)
}

// Conflict says what conflicts with the request.
func Conflict(format string, args ...any) *Error {
	return Errorf(http.StatusConflict, "conflict", format, args...)
}

// Unavailable says a dependency is down and when to retry.
func Unavailable(what string) *Error {
	return &Error{Status: http.StatusServiceUnavailable, Code: "unavailable", Message: what + " is unavailable; retry shortly", RetryAfter: 2 * time.Second}
}

type errorBody struct {
	Success bool      `json:"success"`
	Error   errorInfo `json:"error"`
}

type errorInfo struct {
	Code      string `json:"code"`
	Message   string `json:"message"`
	RequestID string `json:"requestId"`
}

// errorHandler writes every error as the JSON error envelope. Errors that are not *Error or
// *echo.HTTPError are internal: they are logged with the request ID and answered as a bare 500.
func (s *server) errorHandler(err error, c echo.Context) {
	if c.Response().Committed {
		return
	}
	var apiErr *Error
	var httpErr *echo.HTTPError
	switch {
	case errors.As(err, &apiErr):
	case errors.As(err, &httpErr):
		apiErr = fromEcho(httpErr)
	default:
		s.logger.ErrorContext(c.Request().Context(), "internal error", "err", err,
			"request_id", RequestID(c), "method", c.Request().Method, "path", c.Path())
		apiErr = Errorf(http.StatusInternalServerError, "internal", "internal error; quote the request ID when reporting it")
	}
	if apiErr.RetryAfter > 0 {
		c.Response().Header().Set("Retry-After", strconv.Itoa(int(apiErr.RetryAfter.Round(time.Second)/time.Second)))
	}
	body := errorBody{Error: errorInfo{Code: apiErr.Code, Message: apiErr.Message, RequestID: RequestID(c)}}
	if c.Request().Method == http.MethodHead {
		_ = c.NoContent(apiErr.Status)
		return
	}
	_ = c.JSON(apiErr.Status, body)
}

func fromEcho(e *echo.HTTPError) *Error {
	msg := http.StatusText(e.Code)
	if m, ok := e.Message.(string); ok {
		msg = m
	}
	code := "error"
	switch e.Code {
	case http.StatusNotFound:
		code, msg = "not_found", "no such endpoint; see the API reference in the README"
	case http.StatusMethodNotAllowed:
		code = "method_not_allowed"
	case http.StatusRequestEntityTooLarge:
		code, msg = "too_large", "request body too large; keep it under the documented limit"
	case http.StatusUnauthorized:
		code = "unauthorized"
	case http.StatusBadRequest:
		code = "invalid_request"
	case http.StatusUnsupportedMediaType:
		code, msg = "unsupported_media_type", "send JSON with Content-Type: application/json"
	}
	return &Error{Status: e.Code, Code: code, Message: msg}
}
