package events_test

import (
	"encoding/json"
	"strconv"
	"testing"
	"time"

	"github.com/convergence-dev/convergence/pkg/events"
)

func TestEnvelope_RoundTrip_KeepsDataAndRequestID(t *testing.T) {
	t.Parallel()
	in := events.TenantLifecycle{EnvID: 7, OrgID: 1, Name: "acme", State: events.StateRunning, Port: 3001}
	env, err := events.NewEnvelope("convergence/provisioner", events.TypeTenantLifecycle, "7", "req-1", in)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := json.Marshal(env)
	if err != nil {
		t.Fatal(err)
	}
	var fields map[string]any
	if err := json.Unmarshal(raw, &fields); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"specversion", "id", "source", "type", "subject", "time", "datacontenttype", "data", "requestid"} {
		if _, ok := fields[k]; !ok {
			t.Errorf("CloudEvents attribute %q missing from %s", k, raw)
		}
	}

	got, err := events.Decode(raw)
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != env.ID || got.RequestID != "req-1" || got.SpecVersion != "1.0" {
		t.Errorf("decoded envelope %+v differs from %+v", got, env)
	}
	out, err := events.DataAs[events.TenantLifecycle](got)
	if err != nil {
		t.Fatal(err)
	}
	if out.EnvID != 7 || out.State != events.StateRunning || out.Port != 3001 {
		t.Errorf("data = %+v, want %+v", out, in)
	}
}

func TestDecode_InvalidEnvelopes_Rejected(t *testing.T) {
	t.Parallel()
	for name, raw := range map[string]string{
		"not json":      `nope`,
		"wrong version": `{"specversion":"0.3","id":"1","source":"s","type":"t","data":{}}`,
		"no id":         `{"specversion":"1.0","source":"s","type":"t","data":{}}`,
		"no type":       `{"specversion":"1.0","id":"1","source":"s","data":{}}`,
		"no data":       `{"specversion":"1.0","id":"1","source":"s","type":"t"}`,
	} {
		if _, err := events.Decode([]byte(raw)); err == nil {
			t.Errorf("%s: Decode(%s) succeeded", name, raw)
		}
	}
}

func TestNewID_Unique(t *testing.T) {
	t.Parallel()
	seen := map[string]bool{}
	for range 1000 {
		id := events.NewID()
		if len(id) != 32 || seen[id] {
			t.Fatalf("id %q is repeated or not 128 bits of hex", id)
		}
		seen[id] = true
	}
}

func TestNewID_LaterIDsSortLater(t *testing.T) {
	t.Parallel()
	first := events.NewID()
	time.Sleep(2 * time.Millisecond)
	second := events.NewID()
	if first >= second {
		t.Fatalf("%q, made first, does not sort before %q", first, second)
	}
	ms, err := strconv.ParseInt(second[:12], 16, 64)
	if err != nil || time.Since(time.UnixMilli(ms)) > time.Minute {
		t.Fatalf("%q does not begin with the time it was made", second)
	}
}

func TestLifecycleSubjects(t *testing.T) {
	t.Parallel()
	tests := []struct{ got, want string }{
		{events.LifecycleSubject(events.StateRunning, 42), "tenant.lifecycle.running.42"},
		{events.LifecycleFilter("", 0), "tenant.lifecycle.*.*"},
		{events.LifecycleFilter(events.StateDestroyed, 0), "tenant.lifecycle.destroyed.*"},
		{events.LifecycleFilter("", 42), "tenant.lifecycle.*.42"},
		{events.ProgressSubject("t1"), "converge.progress.t1"},
		{events.DeadLetterSubject("metering"), "deadletter.metering"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("got %q, want %q", tt.got, tt.want)
		}
	}
}

func TestUsage_Add(t *testing.T) {
	t.Parallel()
	a := events.Usage{InputTokens: 10, OutputTokens: 5, CachedTokens: 2, TotalTokens: 15}
	b := events.Usage{InputTokens: 1, OutputTokens: 2, CachedTokens: 0, TotalTokens: 3}
	if got := a.Add(b); got != (events.Usage{InputTokens: 11, OutputTokens: 7, CachedTokens: 2, TotalTokens: 18}) {
		t.Errorf("Add = %+v", got)
	}
}
