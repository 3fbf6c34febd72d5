package provisioner_test

import (
	"bufio"
	"context"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/convergence-dev/convergence/internal/httpx"
	"github.com/convergence-dev/convergence/services/api"
)

// followed is a following log stream's answer.
type followed struct {
	lines  <-chan string // closes when the stream ends
	header http.Header
	done   chan struct{}
	resp   *http.Response
}

// trailer returns the answer's trailer once the stream has ended.
func (f *followed) trailer() http.Header {
	<-f.done
	return f.resp.Trailer
}

// follow opens a following log stream and reads its lines as they come.
func (h *harness) follow(ctx context.Context, envID int64) *followed {
	h.t.Helper()
	return h.followAt(ctx, h.url, envID)
}

// followAt is follow on the API at base.
func (h *harness) followAt(ctx context.Context, base string, envID int64) *followed {
	h.t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+tenantPath(envID, "/logs?follow=true&tail=20"), nil)
	require.NoError(h.t, err)
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err := http.DefaultClient.Do(req) //nolint:bodyclose // the reader goroutine closes it
	require.NoError(h.t, err)
	require.Equal(h.t, http.StatusOK, resp.StatusCode)
	lines := make(chan string, 64)
	f := &followed{lines: lines, header: resp.Header, done: make(chan struct{}), resp: resp}
	go func() {
		defer close(f.done)
		defer close(lines)
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	return f
}

// waitLine reads lines until one contains want.
func waitLine(t *testing.T, lines <-chan string, want string) {
	t.Helper()
	timeout := time.After(15 * time.Second)
	for {
		select {
		case l, ok := <-lines:
			require.True(t, ok, "the stream ended before a line with %q", want)
			if strings.Contains(l, want) {
				return
			}
		case <-timeout:
			t.Fatalf("no line with %q", want)
		}
	}
}

func TestLogs_Follow_StreamsNewLinesAndEndsWhenContainerStops(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	envID := envIDOf(h.spawn("chatty"))
	f := h.follow(t.Context(), envID)
	lines := f.lines
	require.Equal(t, "container", f.header.Get("X-Log-Source"))
	waitLine(t, lines, "tenant listening")

	grace := 5
	require.NoError(t, h.cli.ContainerStop(t.Context(), h.svc.Runtime().ContainerName(envID), container.StopOptions{Timeout: &grace}))
	waitLine(t, lines, "tenant stopping") // written after the stream began
	waitLine(t, lines, "tenant stopped")
	select {
	case _, ok := <-lines:
		for ok {
			_, ok = <-lines
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the stream did not end when the container stopped")
	}
	require.Empty(t, f.trailer().Get("X-Log-Error"), "a clean end")
}

func TestLogs_FollowClientLeaves_ProvisionerEndsTheStream(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	envID := envIDOf(h.spawn("quiet"))
	// The API's inbox and the provisioner's control subscription.
	subs := func() int { return h.nc.NumSubscriptions() + h.apiNC.NumSubscriptions() }
	idle := subs()

	ctx, cancel := context.WithCancel(t.Context())
	lines := h.follow(ctx, envID).lines
	waitLine(t, lines, "tenant listening")
	require.Greater(t, subs(), idle, "the stream's inbox and control subscriptions")
	cancel()
	for range lines {
		// Drain until the reader goroutine ends.
	}
	require.Eventually(t, func() bool { return subs() == idle }, 10*time.Second, 20*time.Millisecond,
		"both ends of the stream let go once the client left")
}

func TestLogs_TailAndSince_SelectLines(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	envID := envIDOf(h.spawn("brief"))

	a := h.raw(http.MethodGet, tenantPath(envID, "/logs?tail=1&timestamps=true"), nil)
	require.Equal(t, http.StatusOK, a.code)
	lines := strings.Split(strings.TrimSpace(string(a.body)), "\n")
	require.Len(t, lines, 1)
	_, err := time.Parse(time.RFC3339Nano, strings.Fields(lines[0])[0])
	require.NoError(t, err, "timestamps=true prefixes the engine's time")

	future := time.Now().Add(30 * time.Second).UTC().Format(time.RFC3339)
	a = h.raw(http.MethodGet, tenantPath(envID, "/logs?since="+future), nil)
	require.Equal(t, http.StatusOK, a.code)
	require.Empty(t, strings.TrimSpace(string(a.body)), "nothing was written after since")

	a = h.raw(http.MethodGet, tenantPath(envID, "/logs?since=10m"), nil)
	require.Equal(t, http.StatusOK, a.code)
	require.Contains(t, string(a.body), "tenant listening")
}

func TestLogs_FollowWhileServerShutsDown_StreamEndsAndShutdownDoesNotWait(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	envID := envIDOf(h.spawn("draining"))
	// A second API instance on a server of the platform's own kind, to shut down.
	e := httpx.NewEcho(h.logger)
	_, err := api.New(api.Config{AdminToken: adminToken, MaxBodyBytes: 1 << 20},
		api.Deps{Pool: h.apiPool, Outbox: h.apiOb, NC: h.apiNC, JS: h.apiJS, Echo: e, Logger: h.logger, Registry: prometheus.NewRegistry()})
	require.NoError(t, err)
	ln, err := (&net.ListenConfig{}).Listen(t.Context(), "tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ctx, shutdown := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- httpx.Serve(ctx, e, ln) }()

	f := h.followAt(t.Context(), "http://"+ln.Addr().String(), envID)
	waitLine(t, f.lines, "tenant listening")
	began := time.Now()
	shutdown()
	select {
	case err := <-served:
		require.NoError(t, err)
	case <-time.After(8 * time.Second):
		t.Fatal("the server waited for the log stream")
	}
	require.Less(t, time.Since(began), 5*time.Second)
	select {
	case <-f.done:
	case <-time.After(5 * time.Second):
		t.Fatal("the stream did not end")
	}
}
