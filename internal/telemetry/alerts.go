package telemetry

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Alert is one alert as Alertmanager's webhook sends it (payload version 4).
type Alert struct {
	// Status is "firing" or "resolved".
	Status      string            `json:"status"`
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
	StartsAt    time.Time         `json:"startsAt"`
	EndsAt      time.Time         `json:"endsAt"`
	Fingerprint string            `json:"fingerprint"`
	// ReceivedAt is when this process received it.
	ReceivedAt time.Time `json:"receivedAt"`
}

// alertNotification is the body of Alertmanager's webhook POST.
type alertNotification struct {
	Version  string  `json:"version"`
	Receiver string  `json:"receiver"`
	Status   string  `json:"status"`
	Alerts   []Alert `json:"alerts"`
}

const (
	// alertsKept is how many received alerts GET /alerts shows, newest last.
	alertsKept = 200
	// maxAlertBody bounds a notification; Alertmanager sends at most a few hundred alerts.
	maxAlertBody = 1 << 20
)

// AlertReceiver is the webhook receiver the operators' listener serves at /alerts for
// Alertmanager: each alert it is told of is logged (a warning while firing), counted in
// convergence_alerts_received_total{status}, and kept among the last 200 that GET /alerts
// lists. The compose stack's Alertmanager posts here; a deployment with a pager points its
// Alertmanager there instead, or as well.
type AlertReceiver struct {
	log      *slog.Logger
	received *prometheus.CounterVec

	mu     sync.Mutex
	recent []Alert
}

// NewAlertReceiver returns a receiver that logs to logger and counts in reg.
func NewAlertReceiver(logger *slog.Logger, reg prometheus.Registerer) *AlertReceiver {
	r := &AlertReceiver{
		log: logger,
		// Labelled by status alone: alert names come from the request, and a label must not
		// grow with what a sender chooses to write.
		received: Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Subsystem: "alerts", Name: "received_total",
			Help: "Alerts Alertmanager delivered to this process's /alerts receiver, by status (firing, resolved).",
		}, []string{"status"})),
	}
	for _, s := range []string{"firing", "resolved"} {
		r.received.WithLabelValues(s)
	}
	return r
}

// ServeHTTP takes a notification on POST and lists the recent alerts on GET.
func (r *AlertReceiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	switch req.Method {
	case http.MethodGet:
		r.mu.Lock()
		recent := slices.Clone(r.recent)
		r.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"alerts": recent})
	case http.MethodPost:
		var n alertNotification
		dec := json.NewDecoder(io.LimitReader(req.Body, maxAlertBody))
		if err := dec.Decode(&n); err != nil {
			http.Error(w, fmt.Sprintf("the body is not an Alertmanager webhook notification: %v", err), http.StatusBadRequest)
			return
		}
		if n.Version != "4" {
			http.Error(w, fmt.Sprintf("webhook payload version %q is not supported: Alertmanager sends version 4", n.Version), http.StatusBadRequest)
			return
		}
		r.take(req.Context(), n)
		w.WriteHeader(http.StatusNoContent)
	default:
		w.Header().Set("Allow", "GET, POST")
		http.Error(w, "use POST to deliver alerts, GET to list them", http.StatusMethodNotAllowed)
	}
}

func (r *AlertReceiver) take(ctx context.Context, n alertNotification) {
	now := time.Now().UTC()
	for i := range n.Alerts {
		a := &n.Alerts[i]
		a.ReceivedAt = now
		level := slog.LevelWarn
		if a.Status == "resolved" {
			level = slog.LevelInfo
		} else if a.Status != "firing" {
			a.Status = "unknown"
		}
		r.received.WithLabelValues(a.Status).Inc()
		r.log.Log(ctx, level, "alert "+a.Status, "alertname", a.Labels["alertname"], "severity", a.Labels["severity"],
			"summary", a.Annotations["summary"], "startsAt", a.StartsAt, "receiver", n.Receiver)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.recent = append(r.recent, n.Alerts...)
	if over := len(r.recent) - alertsKept; over > 0 {
		r.recent = slices.Delete(r.recent, 0, over)
	}
}
