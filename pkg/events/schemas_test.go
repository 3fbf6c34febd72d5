package events_test

import (
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/convergence-dev/convergence/pkg/events"
	"github.com/convergence-dev/convergence/pkg/events/eventstest"
)

func validator(t *testing.T) *eventstest.Validator {
	t.Helper()
	v, err := eventstest.NewValidator()
	require.NoError(t, err, "every schema compiles")
	return v
}

func TestSchemas_OneForEveryTypeAndNoOther(t *testing.T) {
	t.Parallel()
	names, err := fs.Glob(events.Schemas(), "*.json")
	require.NoError(t, err)
	want := []string{"envelope.json"}
	for _, typ := range events.Types() {
		want = append(want, events.SchemaName(typ))
	}
	require.ElementsMatch(t, want, names)
	validator(t)
}

// TestSchemas_PayloadsOfTheGoTypesValidate builds one event of every type from the structs the
// services publish, with every field set, and checks it against its schema.
func TestSchemas_PayloadsOfTheGoTypesValidate(t *testing.T) {
	t.Parallel()
	v := validator(t)
	at := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	usage := events.Usage{InputTokens: 30, OutputTokens: 10, CachedTokens: 5, TotalTokens: 40}
	agents := []events.AgentUsage{{Agent: "A", Provider: "openai", Model: "gpt-4o-mini", Calls: 1, Usage: usage}}
	task := "tsk_0193f1c2a4b0a1b2c3d4e5f6a7b8c9d0e1f2"
	for typ, data := range map[string]any{
		events.TypeTenantSpawn: events.TenantSpawn{EnvID: 1, OrgID: 1, Name: "acme", Image: "convergence/tenant-go:dev", Port: 3001,
			Generation: 1, Limits: events.Limits{MemoryBytes: 1 << 28, NanoCPUs: 5e8, PIDs: 256}},
		events.TypeTenantDestroy: events.TenantDestroy{EnvID: 1, OrgID: 1},
		events.TypeTenantLifecycle: events.TenantLifecycle{EnvID: 1, OrgID: 1, Name: "acme", State: events.StateError,
			PrevState: events.StateProvisioning, Reason: "exited with code 2", Port: 3001, At: at},
		events.TypeConvergeRequest: events.ConvergeRequest{TaskID: task, EnvID: 1, OrgID: 1, Type: "design", Prompt: "p",
			AgentARole: "a", AgentBRole: "b", Context: "c", MaxRounds: 4, Model: "m", TokenBudget: 1000, TimeoutSeconds: 1.5,
			WebhookURL: "https://hooks.example.com/x"},
		events.TypeConvergeCompleted: events.ConvergeCompleted{TaskID: task, EnvID: 1, OrgID: 1, Type: "design",
			StopReason: "converged", ConvergenceScore: 91.5, Rounds: 2, Usage: usage, Agents: agents, FinishedAt: at},
		events.TypeConvergeFailed: events.ConvergeFailed{TaskID: task, EnvID: 1, OrgID: 1, Type: "design",
			StopReason: "error", Error: "the provider failed", Rounds: 1, Usage: usage, Agents: agents, FinishedAt: at},
		events.TypeTenantKeyIssued: events.TenantKeyIssued{EnvID: 1, OrgID: 1, Name: "acme", KeyDigest: make([]byte, 32),
			KeyPrefix: "sk_tenant_abcd…", IssuedAt: at},
		events.TypeUsageRecorded: events.UsageRecorded{OrgID: 1, Currency: "USD", PriceVersion: "builtin-2025-06",
			Records: []events.UsageRecord{{SourceEventID: "0193f1c2a4b0a1b2c3d4e5f6a7", Kind: "task", EnvID: 2, TaskID: task, OccurredAt: at,
				Lines: []events.UsageLine{{Line: 0, Provider: "openai", Model: "gpt-4o-mini", Agent: "A", Calls: 1, InputTokens: 30,
					OutputTokens: 10, CachedTokens: 5, TotalTokens: 40, CostMicros: new(int64)}}}}},
		events.TypeBudgetThreshold: events.BudgetThreshold{OrgID: 1, EnvID: 2, Month: "2026-12", Threshold: 0.8, LimitMicros: 5_000_000,
			SpentMicros: 4_100_000, Currency: "USD", At: at, WebhookURL: "https://hooks.example.com/budget"},
	} {
		env, err := events.NewEnvelope("convergence/test", typ, "s", "req-1", data)
		require.NoError(t, err)
		raw, err := json.Marshal(env)
		require.NoError(t, err)
		require.NoError(t, v.Validate(raw), typ)
	}
}

func TestSchemas_PayloadMissingARequiredField_Refused(t *testing.T) {
	t.Parallel()
	v := validator(t)
	require.Error(t, v.ValidateData(events.TypeTenantDestroy, []byte(`{"envId": 1}`)), "orgId is required")
	require.Error(t, v.ValidateData(events.TypeTenantLifecycle, []byte(`{"envId":1,"orgId":1,"name":"a","state":"sleeping","at":"2026-12-01T10:00:00Z"}`)), "an unknown state")
	require.Error(t, v.ValidateData("dev.convergence.unknown.v1", []byte(`{}`)))
	require.Error(t, v.Validate([]byte(`{"specversion":"0.3","id":"x","source":"s","type":"dev.convergence.tenant.destroy.v1","time":"2026-12-01T10:00:00Z","datacontenttype":"application/json","data":{"envId":1,"orgId":1}}`)))
}

// TestCompatibility_PreviousReleasePayloads_StillDecodeAndValidate reads events as the previous
// release wrote them (testdata/previous): each still validates and decodes into today's type.
func TestCompatibility_PreviousReleasePayloads_StillDecodeAndValidate(t *testing.T) {
	t.Parallel()
	v := validator(t)
	files, err := filepath.Glob(filepath.Join("testdata", "previous", "*.json"))
	require.NoError(t, err)
	require.Len(t, files, 6)
	for _, f := range files {
		raw, err := os.ReadFile(f)
		require.NoError(t, err)
		require.NoError(t, v.Validate(raw), f)
		env, err := events.Decode(raw)
		require.NoError(t, err, f)
		switch env.Type {
		case events.TypeConvergeRequest:
			req, err := events.DataAs[events.ConvergeRequest](env)
			require.NoError(t, err)
			require.Equal(t, "Security Expert", req.AgentARole)
			require.Zero(t, req.TokenBudget, "a field added since decodes as its zero value: the converger's default")
		case events.TypeConvergeCompleted:
			c, err := events.DataAs[events.ConvergeCompleted](env)
			require.NoError(t, err)
			require.Equal(t, int64(7300), c.Usage.TotalTokens)
		case events.TypeTenantLifecycle:
			l, err := events.DataAs[events.TenantLifecycle](env)
			require.NoError(t, err)
			require.Equal(t, events.StateRunning, l.State)
		}
	}
}
