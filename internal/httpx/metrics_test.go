package httpx_test

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/convergence-dev/convergence/internal/httpx"
)

func TestMetrics_LabelsByRouteTemplateAndStatusClass_NeverTheRawPath(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	e := httpx.NewEcho(slog.New(slog.DiscardHandler))
	e.Use(httpx.Metrics(reg))
	e.GET("/api/v1/converge/:taskId", func(c echo.Context) error {
		if c.Param("taskId") == "missing" {
			return &httpx.Error{Status: http.StatusNotFound, Code: "not_found", Message: "no such task"}
		}
		return c.String(http.StatusOK, "a task")
	})
	for _, path := range []string{"/api/v1/converge/t1", "/api/v1/converge/t2", "/api/v1/converge/missing", "/nowhere"} {
		e.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, path, nil))
	}

	require.NoError(t, testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP convergence_http_requests_total HTTP requests answered, by route template, method and status class.
# TYPE convergence_http_requests_total counter
convergence_http_requests_total{code="2xx",method="GET",route="/api/v1/converge/:taskId"} 2
convergence_http_requests_total{code="4xx",method="GET",route="/api/v1/converge/:taskId"} 1
convergence_http_requests_total{code="4xx",method="GET",route="unmatched"} 1
`), "convergence_http_requests_total"))
	families, err := reg.Gather()
	require.NoError(t, err)
	inFlight := 0.0
	for _, f := range families {
		if f.GetName() == "convergence_http_requests_in_flight" {
			for _, m := range f.GetMetric() {
				inFlight += m.GetGauge().GetValue()
			}
		}
	}
	require.Zero(t, inFlight, "nothing is in flight after the answers")
	n, err := testutil.GatherAndCount(reg, "convergence_http_request_duration_seconds", "convergence_http_response_size_bytes")
	require.NoError(t, err)
	require.Equal(t, 6, n, "one duration and one size series per route, method and class")
}
