package platform

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/convergence-dev/convergence/internal/httpx"
	"github.com/convergence-dev/convergence/internal/telemetry"
)

func TestReadyz_DetailsOnlyOnTheOpsListener(t *testing.T) {
	t.Parallel()
	ready := &telemetry.Readiness{}
	ready.Add("postgres-api", func(context.Context) error { return errors.New("dial tcp 10.1.2.3:5432: connection refused") })
	public, ops := httpx.NewEcho(slog.New(slog.DiscardHandler)), httpx.NewEcho(slog.New(slog.DiscardHandler))
	healthRoutes(public, ready)
	reg := prometheus.NewRegistry()
	opsRoutes(ops, reg, ready, telemetry.NewAlertReceiver(slog.New(slog.DiscardHandler), reg))

	get := func(e http.Handler, path, auth string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(http.MethodGet, path, nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		rec := httptest.NewRecorder()
		e.ServeHTTP(rec, req)
		return rec
	}
	for _, auth := range []string{"", "Bearer admin-token-0123456789"} {
		rec := get(public, "/readyz", auth)
		require.Equal(t, http.StatusServiceUnavailable, rec.Code)
		require.JSONEq(t, `{"status":"not ready"}`, rec.Body.String(), "no check names or errors, whoever asks")
	}
	require.Equal(t, http.StatusNotFound, get(public, "/metrics", "").Code, "no metrics where tenants reach")
	require.Equal(t, http.StatusNotFound, get(public, "/alerts", "").Code, "no alerts where tenants reach")

	rec := get(ops, "/readyz", "")
	require.Equal(t, http.StatusServiceUnavailable, rec.Code)
	require.Contains(t, rec.Body.String(), "10.1.2.3:5432")
	require.Equal(t, http.StatusOK, get(ops, "/metrics", "").Code)
	require.Equal(t, http.StatusOK, get(ops, "/healthz", "").Code)
	require.Equal(t, http.StatusOK, get(ops, "/alerts", "").Code)
	require.Equal(t, http.StatusOK, get(public, "/healthz", "").Code)
}
