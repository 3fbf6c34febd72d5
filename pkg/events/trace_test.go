package events_test

import (
	"context"
	"testing"

	"go.opentelemetry.io/otel/trace"

	"github.com/convergence-dev/convergence/pkg/events"
)

func TestEnvelope_CarriesTheTraceContextThroughItsJSON(t *testing.T) {
	t.Parallel()
	tid, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	sid, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
	ts, _ := trace.ParseTraceState("vendor=x")
	span := trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled, TraceState: ts})
	ctx := trace.ContextWithSpanContext(context.Background(), span)

	env, err := events.NewEnvelope("test", "dev.convergence.test.v1", "", "", map[string]int{"n": 1})
	if err != nil {
		t.Fatal(err)
	}
	env.InjectTrace(ctx)
	if want := "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"; env.TraceParent != want || env.TraceState != "vendor=x" {
		t.Fatalf("traceparent %q, tracestate %q; want %q, vendor=x", env.TraceParent, env.TraceState, want)
	}
	raw, err := env.Encode()
	if err != nil {
		t.Fatal(err)
	}
	got, err := events.Decode(raw)
	if err != nil {
		t.Fatal(err)
	}
	remote := trace.SpanContextFromContext(got.TraceContext(context.Background()))
	if !remote.IsRemote() || remote.TraceID() != tid || remote.SpanID() != sid || !remote.IsSampled() || remote.TraceState().Get("vendor") != "x" {
		t.Errorf("the decoded event's trace context is %+v, want the injected span as a remote parent", remote)
	}

	env.InjectTrace(context.Background())
	if env.TraceParent == "" {
		t.Error("without a span in ctx the extension is left as it was")
	}
	env.TraceParent, env.TraceState = "", ""
	if ctx := env.TraceContext(context.Background()); trace.SpanContextFromContext(ctx).IsValid() {
		t.Error("an event without traceparent gives no parent")
	}
}
