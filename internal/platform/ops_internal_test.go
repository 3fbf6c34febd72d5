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

func TestReadyz_DetailsOnlyWithTheAdminToken(t *testing.T) {
	t.Parallel()
	ready := &telemetry.Readiness{}
	ready.Add("postgres-api", func(context.Context) error { return errors.New("dial tcp 10.1.2.3:5432: connection refused") })
	e := httpx.NewEcho(slog.New(slog.DiscardHandler))
	opsRoutes(e, prometheus.NewRegistry(), ready, "admin-token-0123456789")

	for _, c := range []struct {
		name, auth string
		details    bool
	}{
		{"anonymous", "", false},
		{"a wrong token", "Bearer not-the-admin-token", false},
		{"the admin token", "Bearer admin-token-0123456789", true},
	} {
		req := httptest.NewRequest(http.MethodGet, "/readyz", nil)
		if c.auth != "" {
			req.Header.Set("Authorization", c.auth)
		}
		rec := httptest.NewRecorder()
		e.ServeHTTP(rec, req)
		require.Equal(t, http.StatusServiceUnavailable, rec.Code, c.name)
		require.Contains(t, rec.Body.String(), `"status":"not ready"`, c.name)
		if c.details {
			require.Contains(t, rec.Body.String(), "10.1.2.3:5432", c.name)
		} else {
			require.NotContains(t, rec.Body.String(), "postgres", "%s sees no check names or errors", c.name)
		}
	}
}
