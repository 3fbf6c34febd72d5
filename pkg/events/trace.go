package events

import (
	"context"

	"go.opentelemetry.io/otel/propagation"
)

// traceContext is the W3C Trace Context format the envelope's tracing extension carries.
var traceContext propagation.TraceContext

// InjectTrace sets e's TraceParent and TraceState to the span in ctx. It leaves them as they
// are when ctx has no span (tracing is off, or the event was not caused by a traced call).
func (e *Envelope) InjectTrace(ctx context.Context) {
	traceContext.Inject(ctx, envelopeCarrier{e})
}

// TraceContext returns ctx with the span e's TraceParent names as its remote parent, so that a
// span started from it joins the trace of the span that caused e. ctx is returned as it is
// when e carries no valid trace context.
func (e Envelope) TraceContext(ctx context.Context) context.Context {
	if e.TraceParent == "" {
		return ctx
	}
	return traceContext.Extract(ctx, envelopeCarrier{&e})
}

// envelopeCarrier lets a propagator read and write an envelope's tracing extension.
type envelopeCarrier struct{ e *Envelope }

func (c envelopeCarrier) Get(key string) string {
	switch key {
	case "traceparent":
		return c.e.TraceParent
	case "tracestate":
		return c.e.TraceState
	}
	return ""
}

func (c envelopeCarrier) Set(key, value string) {
	switch key {
	case "traceparent":
		c.e.TraceParent = value
	case "tracestate":
		c.e.TraceState = value
	}
}

func (c envelopeCarrier) Keys() []string { return []string{"traceparent", "tracestate"} }
