package httpx

import (
	"strconv"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/convergence-dev/convergence/internal/telemetry"
)

// Metrics returns middleware that traces each request (a server span named by method and
// route template, in the trace of the request's traceparent header when it has one) and
// records what it cost, labelled by route template (never the raw path, so tenant and task IDs
// add no series), method and status class:
//
//	convergence_http_requests_total               requests answered
//	convergence_http_request_duration_seconds     time to answer (classic and native buckets)
//	convergence_http_response_size_bytes          bytes written
//	convergence_http_requests_in_flight           requests being served, by route and method
//
// The duration's exemplars are the requests' trace IDs while tracing is on. A request that
// matches no route counts under route "unmatched". Per-tenant figures belong in
// the usage API, not in labels. Use it after the routes' middleware that may answer early
// (it commits a handler's error to see its status).
func Metrics(reg prometheus.Registerer) echo.MiddlewareFunc {
	labels := []string{"route", "method", "code"}
	requests := telemetry.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: telemetry.Namespace, Subsystem: "http", Name: "requests_total",
		Help: "HTTP requests answered, by route template, method and status class.",
	}, labels))
	duration := telemetry.Register(reg, prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: telemetry.Namespace, Subsystem: "http", Name: "request_duration_seconds",
		Help:                           "Time to answer an HTTP request, by route template, method and status class.",
		Buckets:                        []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60},
		NativeHistogramBucketFactor:    1.1,
		NativeHistogramMaxBucketNumber: 160,
	}, labels))
	size := telemetry.Register(reg, prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: telemetry.Namespace, Subsystem: "http", Name: "response_size_bytes",
		Help:    "Bytes of HTTP response bodies, by route template, method and status class.",
		Buckets: prometheus.ExponentialBuckets(64, 4, 9), // 64 B to 4 MiB
	}, labels))
	inFlight := telemetry.Register(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: telemetry.Namespace, Subsystem: "http", Name: "requests_in_flight",
		Help: "HTTP requests being served, by route template and method.",
	}, []string{"route", "method"}))

	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			route := c.Path()
			if route == "" {
				route = "unmatched"
			}
			req := c.Request()
			method := req.Method
			g := inFlight.WithLabelValues(route, method)
			g.Inc()
			defer g.Dec()
			start := time.Now()
			ctx := otel.GetTextMapPropagator().Extract(req.Context(), propagation.HeaderCarrier(req.Header))
			ctx, span := telemetry.Tracer().Start(ctx, method+" "+route, trace.WithSpanKind(trace.SpanKindServer),
				trace.WithAttributes(attribute.String("http.request.method", method), attribute.String("http.route", route)))
			defer span.End()
			c.SetRequest(req.WithContext(ctx))
			if err := next(c); err != nil {
				c.Error(err)
			}
			status := c.Response().Status
			span.SetAttributes(attribute.Int("http.response.status_code", status))
			if status >= 500 {
				span.SetStatus(codes.Error, "")
			}
			code := statusClass(status)
			requests.WithLabelValues(route, method, code).Inc()
			telemetry.Observe(ctx, duration.WithLabelValues(route, method, code), time.Since(start).Seconds())
			size.WithLabelValues(route, method, code).Observe(float64(c.Response().Size))
			return nil
		}
	}
}

// statusClass is "2xx" for 200 to 299, and so on.
func statusClass(status int) string {
	if status < 100 || status > 599 {
		return "unknown"
	}
	return strconv.Itoa(status/100) + "xx"
}
