package live_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/convergence-dev/convergence/internal/live"
	"github.com/convergence-dev/convergence/internal/natstest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// source is a Source whose answers the test sets. The protocol is what is under test here;
// the provisioner's tests run it on the real engine.
type source struct {
	mu      sync.Mutex
	status  live.Status
	logs    string
	follow  *io.PipeReader // the log stream of a following request
	closed  chan struct{}  // closed when the server closed the following stream
	lastReq live.LogsRequest
}

func (s *source) Status(context.Context, int64) (live.Status, error) {
	return s.status, nil
}

func (s *source) Logs(_ context.Context, envID int64, opts live.LogsRequest) (io.ReadCloser, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lastReq = opts
	if envID == 404 {
		return nil, fmt.Errorf("container x: %w", live.ErrNotFound)
	}
	if opts.Follow {
		return &closeNotifier{ReadCloser: s.follow, closed: s.closed}, nil
	}
	return io.NopCloser(strings.NewReader(s.logs)), nil
}

type closeNotifier struct {
	io.ReadCloser
	once   sync.Once
	closed chan struct{}
}

func (c *closeNotifier) Close() error {
	c.once.Do(func() { close(c.closed) })
	return c.ReadCloser.Close()
}

// serve runs a server on a fresh NATS server until the test ends, and returns a client.
func serve(t *testing.T, src live.Source) (*live.Client, *nats.Conn, context.CancelFunc) {
	t.Helper()
	srv := natstest.Start(t)
	nc := srv.Connect()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- live.NewServer(nc, src, slog.New(slog.DiscardHandler)).Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
	client := live.NewClient(srv.Connect(), time.Second)
	require.Eventually(t, func() bool {
		_, err := client.Status(t.Context(), 1)
		return err == nil
	}, 5*time.Second, 10*time.Millisecond)
	return client, nc, cancel
}

func TestStatus_ServerAnswers_FieldsCarried_NoServer_Unavailable(t *testing.T) {
	t.Parallel()
	src := &source{status: live.Status{State: "running", Health: "healthy", HostPort: 3001,
		RestartCount: 2, UptimeSeconds: 90, CPUPercent: 12.5, MemoryBytes: 7 << 20, MemoryLimitBytes: 64 << 20}}
	client, _, _ := serve(t, src)
	st, err := client.Status(t.Context(), 7)
	require.NoError(t, err)
	require.Equal(t, live.Status{State: "running", Health: "healthy", HostPort: 3001, RestartCount: 2, UptimeSeconds: 90,
		CPUPercent: 12.5, MemoryBytes: 7 << 20, MemoryLimitBytes: 64 << 20}, st)

	nobody := live.NewClient(natstest.Start(t).Connect(), time.Second)
	started := time.Now()
	_, err = nobody.Status(t.Context(), 7)
	require.ErrorIs(t, err, live.ErrUnavailable)
	require.Less(t, time.Since(started), time.Second, "no responders is known at once")
}

func TestLogs_LargerThanAChunk_ArriveWholeAndInOrder(t *testing.T) {
	t.Parallel()
	var b strings.Builder
	for i := range 5000 {
		fmt.Fprintf(&b, "line %05d of the tenant's output\n", i)
	}
	src := &source{logs: b.String()}
	client, _, _ := serve(t, src)
	since := time.Now().Add(-time.Hour).Truncate(time.Second).UTC()
	stream, err := client.Logs(t.Context(), live.LogsRequest{EnvID: 1, Tail: 10, Since: since, Timestamps: true})
	require.NoError(t, err)
	defer func() { _ = stream.Close() }()
	got, err := io.ReadAll(stream)
	require.NoError(t, err)
	require.Equal(t, b.String(), string(got))
	require.Equal(t, live.LogsRequest{EnvID: 1, Tail: 10, Since: since, Timestamps: true}, src.lastReq)
}

func TestLogs_NoContainer_ErrNotFound(t *testing.T) {
	t.Parallel()
	client, _, _ := serve(t, &source{})
	_, err := client.Logs(t.Context(), live.LogsRequest{EnvID: 404})
	require.ErrorIs(t, err, live.ErrNotFound)
}

func TestLogs_Follow_LinesAsWritten_CloseStopsTheServerSide(t *testing.T) {
	t.Parallel()
	pr, pw := io.Pipe()
	src := &source{follow: pr, closed: make(chan struct{})}
	client, _, _ := serve(t, src)
	stream, err := client.Logs(t.Context(), live.LogsRequest{EnvID: 1, Follow: true})
	require.NoError(t, err)

	buf := make([]byte, 64)
	for _, line := range []string{"first\n", "second\n"} {
		go func() { _, _ = pw.Write([]byte(line)) }()
		n, err := stream.Read(buf)
		require.NoError(t, err)
		require.Equal(t, line, string(buf[:n]))
	}
	require.NoError(t, stream.Close())
	select {
	case <-src.closed:
	case <-time.After(5 * time.Second):
		t.Fatal("the server kept reading after the client closed")
	}
	_ = pw.Close()
}

func TestLogs_ServerStops_StreamEndsUnavailable(t *testing.T) {
	t.Parallel()
	pr, pw := io.Pipe()
	defer func() { _ = pw.Close() }()
	src := &source{follow: pr, closed: make(chan struct{})}
	client, _, stopServer := serve(t, src)
	stream, err := client.Logs(t.Context(), live.LogsRequest{EnvID: 1, Follow: true})
	require.NoError(t, err)
	defer func() { _ = stream.Close() }()
	stopServer()
	_, err = io.ReadAll(stream)
	require.ErrorIs(t, err, live.ErrUnavailable)
	require.ErrorContains(t, err, "stopping")
}

func TestLogs_ChunkLost_StreamEndsWithErrDataLost(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	nc := srv.Connect()
	// A hand-made server that skips chunk 2, as a slow reader dropping messages would see it.
	sub, err := nc.Subscribe(live.SubjectLogs, func(m *nats.Msg) {
		send := func(kind, seq string, data []byte) {
			out := &nats.Msg{Subject: m.Reply, Data: data, Header: nats.Header{}}
			out.Header.Set("Convergence-Live-Kind", kind)
			if seq != "" {
				out.Header.Set("Convergence-Live-Seq", seq)
			}
			if kind == "start" {
				out.Header.Set("Convergence-Live-Control", nats.NewInbox())
			}
			_ = nc.PublishMsg(out)
		}
		send("start", "", nil)
		send("data", "1", []byte("one\n"))
		send("data", "3", []byte("three\n"))
		send("end", "", nil)
	})
	require.NoError(t, err)
	defer func() { _ = sub.Unsubscribe() }()

	client := live.NewClient(srv.Connect(), time.Second)
	stream, err := client.Logs(t.Context(), live.LogsRequest{EnvID: 1})
	require.NoError(t, err)
	defer func() { _ = stream.Close() }()
	var got bytes.Buffer
	_, err = io.Copy(&got, stream)
	require.ErrorIs(t, err, live.ErrDataLost)
	require.Equal(t, "one\n", got.String(), "what came before the gap is kept; nothing after it")
	require.NotErrorIs(t, err, io.EOF)
}
