package httpx

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
)

// HeaderRequestID carries the request ID in both directions.
const HeaderRequestID = echo.HeaderXRequestID

type server struct {
	logger *slog.Logger
}

// NewEcho returns an echo instance with the platform's middleware: request IDs, panic recovery,
// access logs, and the JSON error envelope.
func NewEcho(logger *slog.Logger) *echo.Echo {
	s := &server{logger: logger}
	e := echo.New()
	e.HideBanner = true
	e.HidePort = true
	e.HTTPErrorHandler = s.errorHandler
	e.Use(requestID, middleware.Recover(), s.accessLog)
	return e
}

type requestIDKey struct{}

// requestID takes a well-formed X-Request-ID from the request or makes one, puts it on the
// response and in the request's context.
func requestID(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		id := c.Request().Header.Get(HeaderRequestID)
		if !validRequestID(id) {
			id = newRequestID()
		}
		c.Set("request_id", id)
		c.Response().Header().Set(HeaderRequestID, id)
		c.SetRequest(c.Request().WithContext(context.WithValue(c.Request().Context(), requestIDKey{}, id)))
		return next(c)
	}
}

// RequestID returns the request's ID.
func RequestID(c echo.Context) string {
	id, _ := c.Get("request_id").(string)
	return id
}

// RequestIDFrom returns the request ID a context carries, or "".
func RequestIDFrom(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey{}).(string)
	return id
}

func validRequestID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	for _, r := range id {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.'
		if !ok {
			return false
		}
	}
	return true
}

func newRequestID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func (s *server) accessLog(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		start := time.Now()
		err := next(c)
		if err != nil {
			c.Error(err)
		}
		path := c.Path()
		if path == "/metrics" || path == "/healthz" || path == "/readyz" {
			return nil
		}
		attrs := []slog.Attr{
			slog.String("request_id", RequestID(c)),
			slog.String("method", c.Request().Method),
			slog.String("route", path),
			slog.Int("status", c.Response().Status),
			slog.Duration("duration", time.Since(start)),
		}
		if envID, ok := c.Get(tenantKey).(int64); ok {
			attrs = append(attrs, slog.Int64("env_id", envID))
		}
		s.logger.LogAttrs(c.Request().Context(), slog.LevelInfo, "http request", attrs...)
		return nil
	}
}

// tenantKey is where SetTenant keeps the tenant of a request.
const tenantKey = "httpx.tenant"

// SetTenant records which tenant a request is from, once its key is checked, for the access
// log. The tenant's ID goes there, never its key.
func SetTenant(c echo.Context, envID int64) { c.Set(tenantKey, envID) }

// Listen opens addr, with an error that says what to do when the port is taken.
func Listen(ctx context.Context, addr string) (net.Listener, error) {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w; stop whatever holds the port or set CONVERGENCE_HTTP_ADDR to another address", addr, err)
	}
	return ln, nil
}

type drainingKey struct{}

// Draining returns a channel that is closed when the server begins to shut down. Handlers that
// stream (logs, progress) end their stream on it, so a shutdown does not wait for them.
func Draining(ctx context.Context) <-chan struct{} {
	ch, _ := ctx.Value(drainingKey{}).(chan struct{})
	return ch // A nil channel never fires: outside a server nothing drains.
}

// Serve serves e on ln until ctx is done, then shuts down gracefully: streams end at once,
// other requests in flight get up to ten seconds, then their contexts are cancelled. It
// returns nil after a clean shutdown.
func Serve(ctx context.Context, e *echo.Echo, ln net.Listener) error {
	draining := make(chan struct{})
	base, cancelBase := context.WithCancel(context.WithValue(context.WithoutCancel(ctx), drainingKey{}, draining))
	defer cancelBase()
	srv := &http.Server{
		Handler:           e,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return base },
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("http server: %w", err)
	case <-ctx.Done():
	}
	close(draining)
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	shutdownErr := srv.Shutdown(shutdownCtx)
	cancelBase()
	if shutdownErr != nil {
		_ = srv.Close()
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("http server: %w", err)
	}
	if shutdownErr != nil {
		return fmt.Errorf("http shutdown: %w", shutdownErr)
	}
	return nil
}
