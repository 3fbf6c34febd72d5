package platform_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/convergence-dev/convergence/internal/apikey"
	"github.com/convergence-dev/convergence/internal/dockertest"
	"github.com/convergence-dev/convergence/internal/natsauth"
	"github.com/convergence-dev/convergence/internal/natsrpc"
	"github.com/convergence-dev/convergence/internal/pgrole"
	"github.com/convergence-dev/convergence/internal/pgtest"
	"github.com/convergence-dev/convergence/internal/taskspec"
	"github.com/convergence-dev/convergence/pkg/events"
	"github.com/convergence-dev/convergence/services/converger"
	tenanttemplates "github.com/convergence-dev/convergence/tenant-templates"
)

// startAlone runs service alone on a database where every other service's schema has been
// dropped, and returns a connection to its NATS: whatever it does, it does with its own tables
// and what the bus brings it.
func startAlone(t *testing.T, service string) (*pgtest.DB, *nats.Conn, jetstream.JetStream) {
	t.Helper()
	db := pgtest.NewDB(t)
	for _, other := range pgrole.Services() {
		if other != service {
			_, err := db.Pool.Exec(t.Context(), "DROP SCHEMA "+pgx.Identifier{other}.Sanitize()+" CASCADE")
			require.NoError(t, err)
		}
	}
	cfg := testConfig(t)
	cfg.Target = service
	cfg.DatabaseURL = db.URL
	cfg.DataDir = t.TempDir()
	cfg.NATSListen = freeAddr(t)
	cfg.Converger.Provider = converger.ProviderSimulated
	cfg.Converger.Simulated.Latency = time.Millisecond
	start(t, cfg)
	nc := connectAs(t, cfg, natsauth.Admin)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	return db, nc, js
}

// publish sends data as an event of typ on subject.
func publish(t *testing.T, js jetstream.JetStream, subject, typ string, data any) {
	t.Helper()
	env, err := events.NewEnvelope("convergence/test", typ, "", "", data)
	require.NoError(t, err)
	b, err := json.Marshal(env)
	require.NoError(t, err)
	_, err = js.Publish(t.Context(), subject, b)
	require.NoError(t, err)
}

// nextOn returns the data of the next event on the subjects of stream, as T.
func nextOn[T any](t *testing.T, js jetstream.JetStream, stream, subject string) T {
	t.Helper()
	cons, err := js.OrderedConsumer(t.Context(), stream, jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}})
	require.NoError(t, err)
	msg, err := cons.Next(jetstream.FetchMaxWait(20 * time.Second))
	require.NoError(t, err, "an event on %s", subject)
	env, err := events.Decode(msg.Data())
	require.NoError(t, err)
	v, err := events.DataAs[T](env)
	require.NoError(t, err)
	return v
}

func TestServices_EachRunsOnADatabaseWithOnlyItsOwnSchema(t *testing.T) {
	t.Parallel()

	t.Run("converger", func(t *testing.T) {
		t.Parallel()
		_, _, js := startAlone(t, pgrole.Converger)
		id := taskspec.NewID()
		publish(t, js, events.SubjectConvergeRequest, events.TypeConvergeRequest, events.ConvergeRequest{
			TaskID: id, EnvID: 1, OrgID: 1, Type: "design", Prompt: "Design a queue. [sim:converge]",
			AgentARole: "Architect", AgentBRole: "Reviewer", MaxRounds: 4})
		done := nextOn[events.ConvergeCompleted](t, js, events.StreamConvergeResults, events.SubjectConvergeCompleted)
		require.Equal(t, id, done.TaskID)
		require.Positive(t, done.Usage.TotalTokens)
	})

	t.Run("metering", func(t *testing.T) {
		t.Parallel()
		db, nc, js := startAlone(t, pgrole.Metering)
		usage := events.Usage{InputTokens: 10, OutputTokens: 5, TotalTokens: 15}
		id := taskspec.NewID()
		// The converger's part on the bus: its record of the task, which metering asks for
		// before it bills the result.
		records := natsrpc.NewServer(nc, "converger", discard)
		natsrpc.Handle(records, events.SubjectTasksKnown, 5*time.Second, func(context.Context, events.KnownTasksQuery) (events.KnownTasks, error) {
			return events.KnownTasks{TaskIDs: []string{id}, Records: []events.FinishedTask{
				{TaskID: id, EnvID: 1, OrgID: 1, Status: "completed", Usage: usage, FinishedAt: time.Now()}}}, nil
		})
		ctx, cancel := context.WithCancel(context.Background())
		served := make(chan error, 1)
		go func() { served <- records.Run(ctx) }()
		t.Cleanup(func() { cancel(); require.NoError(t, <-served) })
		publish(t, js, events.SubjectConvergeCompleted, events.TypeConvergeCompleted, events.ConvergeCompleted{
			TaskID: id, EnvID: 1, OrgID: 1, Type: "design", StopReason: "converged", ConvergenceScore: 90,
			Rounds: 2, Usage: usage, FinishedAt: time.Now().UTC(),
			Agents: []events.AgentUsage{{Agent: "A", Provider: "simulated", Model: "sim", Calls: 1, Usage: usage}}})
		require.Eventually(t, func() bool {
			var n int64
			err := db.Pool.QueryRow(t.Context(), `SELECT coalesce(sum(total_tokens), 0) FROM metering.metering_ledger`).Scan(&n)
			return err == nil && n == 15
		}, 20*time.Second, 50*time.Millisecond, "the ledger holds the task's tokens")
	})

	t.Run("provisioner", func(t *testing.T) {
		t.Parallel()
		require.Equal(t, tenanttemplates.GoImage, dockertest.TenantImage(t))
		_, nc, js := startAlone(t, pgrole.Provisioner)
		recv, err := apikey.NewReceiver()
		require.NoError(t, err)
		adm, err := natsrpc.Call[events.TenantAdmission, events.TenantAdmitted](t.Context(), nc, events.SubjectTenantAdmit, events.TenantAdmission{
			OrgID: 1, MaxTenants: 5, Name: "alone", Image: tenanttemplates.GoImage, ReplyKey: recv.PublicKey(),
			Limits: events.Limits{MemoryBytes: 64 << 20, NanoCPUs: 5e8, PIDs: 64}})
		require.NoError(t, err)
		_, err = recv.Open(adm.Tenant.EnvID, adm.SealedKey)
		require.NoError(t, err)
		running := nextOn[events.TenantLifecycle](t, js, events.StreamTenantLifecycle, events.LifecycleFilter(events.StateRunning, adm.Tenant.EnvID))
		require.Equal(t, adm.Tenant.EnvID, running.EnvID)

		publish(t, js, events.SubjectTenantDestroy, events.TypeTenantDestroy, events.TenantDestroy{EnvID: adm.Tenant.EnvID, OrgID: 1})
		gone := nextOn[events.TenantLifecycle](t, js, events.StreamTenantLifecycle, events.LifecycleFilter(events.StateDestroyed, adm.Tenant.EnvID))
		require.Equal(t, adm.Tenant.EnvID, gone.EnvID)
	})
}
