package events_test

import (
	"testing"

	"github.com/convergence-dev/convergence/pkg/events"
)

func TestStreamFor(t *testing.T) {
	t.Parallel()
	tests := []struct {
		subject, stream string
		ok              bool
	}{
		{events.SubjectTenantSpawn, events.StreamTenantCommands, true},
		{events.SubjectConvergeRequest, events.StreamConvergeCommands, true},
		{events.SubjectConvergeFailed, events.StreamConvergeResults, true},
		{events.LifecycleSubject(events.StateRunning, 42), events.StreamTenantLifecycle, true},
		{events.DeadLetterSubject("metering"), events.StreamDeadLetter, true},
		{"tenant.lifecycle", "", false},           // ">" needs at least one more token
		{events.ProgressSubject("t1"), "", false}, // core NATS, no stream
		{"converge.completed.extra", "", false},   // a literal filter matches exactly
		{"tenant", "", false},
	}
	for _, tt := range tests {
		stream, ok := events.StreamFor(tt.subject)
		if stream != tt.stream || ok != tt.ok {
			t.Errorf("StreamFor(%q) = %q, %v; want %q, %v", tt.subject, stream, ok, tt.stream, tt.ok)
		}
	}
}
