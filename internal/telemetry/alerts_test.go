package telemetry_test

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/convergence-dev/convergence/internal/telemetry"
)

func TestAlertReceiver_TakesAlertmanagerNotificationsAndListsThem(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	r := telemetry.NewAlertReceiver(slog.New(slog.DiscardHandler), reg)
	post := func(body string) *httptest.ResponseRecorder {
		rec := httptest.NewRecorder()
		r.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/alerts", strings.NewReader(body)))
		return rec
	}

	// A notification as Alertmanager 0.25 sends it, one alert firing and one resolved.
	rec := post(`{"version":"4","groupKey":"{}:{alertname=\"TenantUnhealthy\"}","status":"firing","receiver":"platform",
		"groupLabels":{"alertname":"TenantUnhealthy"},"commonLabels":{},"commonAnnotations":{},"externalURL":"http://am:9093",
		"truncatedAlerts":0,"alerts":[
		{"status":"firing","labels":{"alertname":"TenantUnhealthy","severity":"ticket"},"annotations":{"summary":"1 tenant containers are unhealthy"},
		 "startsAt":"2026-12-06T17:00:00Z","endsAt":"0001-01-01T00:00:00Z","generatorURL":"http://prom/graph","fingerprint":"a1"},
		{"status":"resolved","labels":{"alertname":"OutboxLagHigh"},"annotations":{},
		 "startsAt":"2026-12-06T16:00:00Z","endsAt":"2026-12-06T16:30:00Z","generatorURL":"","fingerprint":"b2"}]}`)
	require.Equal(t, http.StatusNoContent, rec.Code, rec.Body.String())
	require.NoError(t, testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP convergence_alerts_received_total Alerts Alertmanager delivered to this process's /alerts receiver, by status (firing, resolved).
# TYPE convergence_alerts_received_total counter
convergence_alerts_received_total{status="firing"} 1
convergence_alerts_received_total{status="resolved"} 1
`), "convergence_alerts_received_total"))

	rec = httptest.NewRecorder()
	r.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/alerts", nil))
	var listed struct{ Alerts []telemetry.Alert }
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &listed))
	require.Len(t, listed.Alerts, 2)
	require.Equal(t, "TenantUnhealthy", listed.Alerts[0].Labels["alertname"])
	require.Equal(t, "resolved", listed.Alerts[1].Status)
	require.False(t, listed.Alerts[1].ReceivedAt.IsZero())

	for body, want := range map[string]string{
		`{"version":"3","alerts":[]}`: `version "3" is not supported`,
		`not json`:                    "not an Alertmanager webhook notification",
	} {
		rec := post(body)
		require.Equal(t, http.StatusBadRequest, rec.Code)
		require.Contains(t, rec.Body.String(), want)
	}
}
