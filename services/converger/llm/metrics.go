package llm

import (
	"cmp"
	"context"
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/convergence-dev/convergence/internal/telemetry"
)

// Instrumented wraps next and records each call's outcome and duration:
//
//	convergence_llm_requests_total{provider, model, outcome}
//	convergence_llm_request_duration_seconds{provider, model, outcome}
//
// and traces it: a client span "chat <model>" with OpenTelemetry's GenAI attributes (provider,
// models asked for and answering, tokens), whose trace ID is the duration's exemplar.
//
// outcome is ok, rate_limited, server_error, timeout, bad_response, rejected, cancelled or
// error. model is the model that answered, as the provider reports it, and "unknown" for a
// failed call: a tenant may ask for any model name, and a name no provider knows must not
// add a series. Put it inside [Retrying] to count every attempt.
func Instrumented(next Provider, reg prometheus.Registerer) Provider {
	labels := []string{"provider", "model", "outcome"}
	p := &instrumented{
		next: next,
		calls: telemetry.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: telemetry.Namespace, Subsystem: "llm", Name: "requests_total",
			Help: "Calls to LLM providers, by provider, model and outcome.",
		}, labels)),
		duration: telemetry.Register(reg, prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: telemetry.Namespace, Subsystem: "llm", Name: "request_duration_seconds",
			Help:                           "Time an LLM provider took to answer a call, by provider, model and outcome.",
			Buckets:                        []float64{0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 60, 120},
			NativeHistogramBucketFactor:    1.1,
			NativeHistogramMaxBucketNumber: 160,
		}, labels)),
	}
	// The failure series exist from the start, so an alert sees the first failure.
	for _, outcome := range []string{"rate_limited", "server_error", "timeout", "bad_response", "rejected", "error"} {
		p.calls.WithLabelValues(next.Name(), "unknown", outcome)
	}
	return p
}

type instrumented struct {
	next     Provider
	calls    *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

func (p *instrumented) Name() string { return p.next.Name() }

func (p *instrumented) Complete(ctx context.Context, req Request) (Response, error) {
	start := time.Now()
	ctx, span := telemetry.Tracer().Start(ctx, "chat "+cmp.Or(req.Model, "default"), trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(attribute.String("gen_ai.operation.name", "chat"), attribute.String("gen_ai.provider.name", p.next.Name()),
			attribute.String("gen_ai.request.model", req.Model)))
	defer span.End()
	resp, err := p.next.Complete(ctx, req)
	model, outcome := resp.Model, outcomeOf(ctx, err)
	if err != nil || model == "" {
		model = "unknown"
	}
	if err != nil {
		span.SetStatus(codes.Error, outcome)
	} else {
		if req.Model == "" && resp.Model != "" {
			span.SetName("chat " + resp.Model) // The default model, as the provider names it.
		}
		span.SetAttributes(attribute.String("gen_ai.response.model", resp.Model),
			attribute.Int64("gen_ai.usage.input_tokens", resp.Usage.InputTokens), attribute.Int64("gen_ai.usage.output_tokens", resp.Usage.OutputTokens))
	}
	p.calls.WithLabelValues(p.next.Name(), model, outcome).Inc()
	telemetry.Observe(ctx, p.duration.WithLabelValues(p.next.Name(), model, outcome), time.Since(start).Seconds())
	return resp, err
}

// outcomeOf names how a call ended.
func outcomeOf(ctx context.Context, err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, ErrRateLimited):
		return "rate_limited"
	case errors.Is(err, ErrServer):
		return "server_error"
	case errors.Is(err, ErrTimeout):
		return "timeout"
	case errors.Is(err, ErrBadResponse):
		return "bad_response"
	case errors.Is(err, ErrPermanent):
		return "rejected"
	case ctx.Err() != nil:
		return "cancelled"
	default:
		return "error"
	}
}
