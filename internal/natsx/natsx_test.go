package natsx_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/convergence-dev/convergence/internal/natsauth"
	"github.com/convergence-dev/convergence/internal/natstest"
	"github.com/convergence-dev/convergence/internal/natsx"
	"github.com/convergence-dev/convergence/pkg/events"
	"github.com/convergence-dev/convergence/pkg/events/consumer"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestEnsureStreams_Twice_Idempotent(t *testing.T) {
	t.Parallel()
	js := natstest.Start(t).JetStream() // Start has created the streams once.
	require.NoError(t, natsx.EnsureStreams(t.Context(), js, 1))
	for _, cfg := range events.Streams() {
		s, err := js.Stream(t.Context(), cfg.Name)
		require.NoError(t, err)
		info, err := s.Info(t.Context())
		require.NoError(t, err)
		require.Equal(t, cfg.Retention, info.Config.Retention, cfg.Name)
		require.Equal(t, cfg.Subjects, info.Config.Subjects, cfg.Name)
	}
}

func TestLifecycle_IntegratorSeesFactsInOrderAndResumesAfterRestart(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	js := srv.JetStream()
	publish := func(state events.TenantState) {
		env, err := events.NewEnvelope("test", events.TypeTenantLifecycle, "9", "", events.TenantLifecycle{EnvID: 9, State: state})
		require.NoError(t, err)
		b, err := json.Marshal(env)
		require.NoError(t, err)
		_, err = js.Publish(t.Context(), events.LifecycleSubject(state, 9), b)
		require.NoError(t, err)
	}
	// Facts published before the integrator starts are kept and replayed to it.
	publish(events.StateProvisioning)
	publish(events.StateRunning)

	seen := make(chan events.TenantState, 10)
	integrator := srv.JetStreamAs(natsauth.Integrator)
	consume := func(ctx context.Context) error {
		return consumer.Lifecycle(ctx, integrator, "integrator", events.LifecycleFilter("", 9),
			func(_ context.Context, e consumer.Event[events.TenantLifecycle]) error {
				seen <- e.Data.State
				return nil
			}, slog.New(slog.DiscardHandler))
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- consume(ctx) }()
	require.Equal(t, events.StateProvisioning, next(t, seen))
	require.Equal(t, events.StateRunning, next(t, seen))
	cancel()
	require.NoError(t, <-done)

	// The durable consumer remembers its place: after a restart only the new fact arrives. On a
	// loaded machine the server may still hold the stopped consumer's last pull request and
	// hand the fact to it; nobody acknowledges it there, so it comes again after the ack wait.
	publish(events.StateDestroyed)
	ctx, cancel = context.WithCancel(t.Context())
	go func() { done <- consume(ctx) }()
	require.Equal(t, events.StateDestroyed, nextWithin(t, seen, consumer.DefaultAckWait+15*time.Second))
	cancel()
	require.NoError(t, <-done)
	require.Empty(t, seen)
}

func next(t *testing.T, ch <-chan events.TenantState) events.TenantState {
	t.Helper()
	return nextWithin(t, ch, 10*time.Second)
}

func nextWithin(t *testing.T, ch <-chan events.TenantState, wait time.Duration) events.TenantState {
	t.Helper()
	select {
	case s := <-ch:
		return s
	case <-time.After(wait):
		t.Fatalf("no lifecycle fact within %s", wait)
		return ""
	}
}

func TestStartEmbedded_PortInUse_SaysWhatToDo(t *testing.T) {
	t.Parallel()
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = busy.Close() })
	_, err = natsx.StartEmbedded(natsx.EmbeddedConfig{
		StoreDir: t.TempDir(), Host: "127.0.0.1", Port: busy.Addr().(*net.TCPAddr).Port, Auth: authority(t),
	}, slog.New(slog.DiscardHandler))
	require.ErrorContains(t, err, "is in use")
	require.ErrorContains(t, err, "NATS_URL")
}

func TestSplitListen_HostPortOrFreePort(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		host string
		port int
		err  bool
	}{
		{"0.0.0.0:4222", "0.0.0.0", 4222, false},
		{"127.0.0.1:-1", "127.0.0.1", -1, false},
		{"127.0.0.1:0", "", 0, true}, // nats-server would take 0 for its default port
		{"localhost", "", 0, true},
		{"host:99999", "", 0, true},
	} {
		host, port, err := natsx.SplitListen(tc.in)
		if tc.err {
			require.Error(t, err, tc.in)
			continue
		}
		require.NoError(t, err, tc.in)
		require.Equal(t, tc.host, host)
		require.Equal(t, tc.port, port)
	}
}

// authority is a new NATS authority for a test's server.
func authority(t *testing.T) *natsauth.Authority {
	t.Helper()
	a, err := natsauth.LoadOrCreate(t.TempDir())
	require.NoError(t, err)
	return a
}
