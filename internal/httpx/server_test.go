package httpx_test

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/labstack/echo/v4"
	"github.com/stretchr/testify/require"

	"github.com/convergence-dev/convergence/internal/httpx"
)

func TestAccessLog_OneLinePerRequest_WithTenantIDNeverItsKey(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	e := httpx.NewEcho(slog.New(slog.NewJSONHandler(&buf, nil)))
	e.GET("/api/v1/usage/me", func(c echo.Context) error {
		httpx.SetTenant(c, 42)
		return c.String(http.StatusOK, "usage")
	})
	req := httptest.NewRequest(http.MethodGet, "/api/v1/usage/me", nil)
	req.Header.Set("Authorization", "Bearer sk_tenant_secretsecretsecret")
	req.Header.Set(httpx.HeaderRequestID, "req-1")
	e.ServeHTTP(httptest.NewRecorder(), req)

	var line map[string]any
	require.NoError(t, json.Unmarshal(buf.Bytes(), &line), "one JSON line: %s", buf.String())
	require.Equal(t, "req-1", line["request_id"])
	require.Equal(t, "/api/v1/usage/me", line["route"])
	require.EqualValues(t, 200, line["status"])
	require.EqualValues(t, 42, line["env_id"])
	require.NotContains(t, buf.String(), "secret", "the key is never logged")
}
