package e2e_test

import (
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/convergence-dev/convergence/internal/platform"
)

// One converge, traced as an operator configures it (the standard OTEL_* variables, OTLP over
// HTTP to a collector, here one in this process), is one connected trace: the API's request
// span, the outbox's publish of the request, the converger's handling of it with each LLM call,
// the publish of its result, and the webhook delivery, each span the child of another. The
// request comes with a traceparent, as from a traced caller, and the trace is that caller's.
// Not parallel: the OTEL_* variables are the process's.
func TestTraces_OneConvergeIsOneConnectedTraceFromRequestToWebhook(t *testing.T) {
	collector := &otlpCollector{}
	srv := httptest.NewServer(collector)
	t.Cleanup(srv.Close)
	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", srv.URL+"/v1/traces")
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "100") // milliseconds between exports
	t.Setenv("OTEL_SERVICE_NAME", "convergence-e2e")

	s := startStack(t, func(c *platform.Config) { c.Converger.Webhook.AllowPrivateTargets = true })
	tn := s.spawn(t, "traced", false)
	hookURL, firstDelivery := webhookReceiver(t)

	const traceID, callerSpan = "5a1f0c3e9b7d4e2a8c6b0d1f3e5a7c9b", "1a2b3c4d5e6f7081"
	body := strings.NewReader(`{"prompt":"Design a rate limiter","webhookUrl":"` + hookURL + `/hook"}`)
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, s.API+"/api/v1/converge", body)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+tn.APIKey)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Traceparent", "00-"+traceID+"-"+callerSpan+"-01")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	answer, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s", answer)

	require.Contains(t, firstDelivery().header.Get("Traceparent"), "00-"+traceID+"-", "the webhook carries the trace on")

	want := []string{
		"POST /api/v1/converge",                    // the API's request
		"publish dev.convergence.converge.request", // the outbox relay's publish of the command
		"process dev.convergence.converge.request", // the converger's handling
		"chat ", // an LLM call
		"publish dev.convergence.converge.completed",
		"POST webhook",
	}
	var spans []*tracepb.Span
	require.Eventually(t, func() bool {
		spans = collector.trace(traceID)
		for _, prefix := range want {
			if !hasSpan(spans, prefix) {
				return false
			}
		}
		return true
	}, 30*time.Second, 100*time.Millisecond, "the trace has every span of the converge: %v", names(collector.trace(traceID)))

	t.Logf("spans: %v", names(spans))
	// Connected: every span's parent is the caller's span or another span of the trace.
	ids := map[string]bool{callerSpan: true}
	for _, sp := range spans {
		ids[hex.EncodeToString(sp.SpanId)] = true
	}
	for _, sp := range spans {
		require.True(t, ids[hex.EncodeToString(sp.ParentSpanId)], "span %q has a parent outside the trace", sp.Name)
	}

	// The request's latency sample keeps the trace as its exemplar.
	mreq, err := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://"+s.Config.OpsAddr+"/metrics", nil)
	require.NoError(t, err)
	mreq.Header.Set("Accept", "application/openmetrics-text; version=1.0.0")
	mresp, err := http.DefaultClient.Do(mreq)
	require.NoError(t, err)
	metrics, _ := io.ReadAll(mresp.Body)
	mresp.Body.Close()
	require.Regexp(t, `convergence_http_request_duration_seconds_bucket\{[^}]*route="/api/v1/converge"[^}]*\} \d+ # \{trace_id="`+traceID+`"\}`, string(metrics))
}

// otlpCollector takes OTLP/HTTP trace exports (protobuf) and keeps their spans.
type otlpCollector struct {
	mu    sync.Mutex
	spans []*tracepb.Span
}

func (c *otlpCollector) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	raw, err := io.ReadAll(r.Body)
	var req collectortrace.ExportTraceServiceRequest
	if err == nil {
		err = proto.Unmarshal(raw, &req)
	}
	if r.URL.Path != "/v1/traces" || err != nil {
		http.Error(w, "want an OTLP/HTTP protobuf trace export at /v1/traces", http.StatusBadRequest)
		return
	}
	c.mu.Lock()
	for _, rs := range req.ResourceSpans {
		for _, ss := range rs.ScopeSpans {
			c.spans = append(c.spans, ss.Spans...)
		}
	}
	c.mu.Unlock()
	out, _ := proto.Marshal(&collectortrace.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	_, _ = w.Write(out)
}

// trace returns the spans of the trace with the hex ID id.
func (c *otlpCollector) trace(id string) []*tracepb.Span {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*tracepb.Span
	for _, sp := range c.spans {
		if hex.EncodeToString(sp.TraceId) == id {
			out = append(out, sp)
		}
	}
	return out
}

func hasSpan(spans []*tracepb.Span, prefix string) bool {
	for _, sp := range spans {
		if strings.HasPrefix(sp.Name, prefix) {
			return true
		}
	}
	return false
}

func names(spans []*tracepb.Span) []string {
	out := make([]string, len(spans))
	for i, sp := range spans {
		out[i] = sp.Name
	}
	return out
}
