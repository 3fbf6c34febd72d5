// Package natstest runs an embedded JetStream server for tests, with the platform's streams and
// its authentication: a test connects as the admin user, or as a service's own user to have
// the server check what that service may do.
package natstest

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/convergence-dev/convergence/internal/natsauth"
	"github.com/convergence-dev/convergence/internal/natsx"
)

// Server is an embedded JetStream server with file storage in a test's temp dir.
type Server struct {
	t        testing.TB
	StoreDir string
	Embedded *natsx.Embedded
	// Auth issues the server's users.
	Auth *natsauth.Authority
	port int
	// refusalsExpected: the test plays an attacker, whose refusals are not failures.
	refusalsExpected atomic.Bool
}

// Start starts a server on a free loopback port with the platform's streams created. It is
// shut down when the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	auth, err := natsauth.LoadOrCreate(t.TempDir())
	require.NoError(t, err)
	s := &Server{t: t, StoreDir: t.TempDir(), Auth: auth, port: -1}
	s.start()
	t.Cleanup(s.Shutdown)
	nc := s.Connect()
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, natsx.EnsureStreams(ctx, js, 1))
	return s
}

func (s *Server) start() {
	s.t.Helper()
	emb, err := natsx.StartEmbedded(natsx.EmbeddedConfig{StoreDir: s.StoreDir, Port: s.port, Auth: s.Auth}, slog.New(slog.DiscardHandler))
	require.NoError(s.t, err, "start embedded NATS")
	s.Embedded = emb
	// Keep the port across restarts so reconnecting clients find the server again.
	s.port = emb.Server().Addr().(*net.TCPAddr).Port
}

// URL is the server's client URL.
func (s *Server) URL() string { return s.Embedded.ClientURL() }

// Connect opens a connection as the admin user, which may do anything. It reconnects across
// restarts, and is closed when the test ends.
func (s *Server) Connect() *nats.Conn {
	s.t.Helper()
	return s.ConnectAs(natsauth.Admin)
}

// ConnectAs opens a connection as a new user of role, as Connect does. Anything the server
// refuses it fails the test when it ends, unless the test called ExpectRefusals: a service
// connected this way must need no more than its role allows.
func (s *Server) ConnectAs(role natsauth.Role) *nats.Conn {
	s.t.Helper()
	opts, err := s.Auth.Connect(role, "test-"+string(role))
	require.NoError(s.t, err)
	var mu sync.Mutex
	var refused []string
	opts = append(opts, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			if errors.Is(err, nats.ErrPermissionViolation) {
				mu.Lock()
				refused = append(refused, err.Error())
				mu.Unlock()
			}
		}))
	nc, err := nats.Connect(s.URL(), opts...)
	require.NoError(s.t, err)
	s.t.Cleanup(func() {
		nc.Close()
		mu.Lock()
		defer mu.Unlock()
		if len(refused) > 0 && !s.refusalsExpected.Load() {
			s.t.Errorf("the server refused what a %s user did: %s", role, strings.Join(refused, "; "))
		}
	})
	return nc
}

// ExpectRefusals lets the test's connections be refused what their role may not do.
func (s *Server) ExpectRefusals() { s.refusalsExpected.Store(true) }

// JetStream returns a JetStream context on a new admin connection.
func (s *Server) JetStream() jetstream.JetStream {
	s.t.Helper()
	return s.JetStreamAs(natsauth.Admin)
}

// JetStreamAs returns a JetStream context on a new connection as a user of role.
func (s *Server) JetStreamAs(role natsauth.Role) jetstream.JetStream {
	s.t.Helper()
	js, err := jetstream.New(s.ConnectAs(role))
	require.NoError(s.t, err)
	return js
}

// Restart shuts the server down and starts it again on the same store dir and port, as a
// crash-and-restart of the broker would.
func (s *Server) Restart() {
	s.t.Helper()
	s.Embedded.Shutdown()
	s.start()
}

// Shutdown stops the server; it is safe to call more than once.
func (s *Server) Shutdown() {
	if s.Embedded != nil {
		s.Embedded.Shutdown()
	}
}

// WaitDrained waits until the durable consumer on stream has delivered the stream's last
// message and has nothing pending or unacknowledged. A consumer just created may not have
// counted its pending messages yet, so "nothing pending" alone is not enough.
func WaitDrained(t testing.TB, js jetstream.JetStream, stream, durable string, timeout time.Duration) {
	t.Helper()
	require.Eventually(t, func() bool {
		ctx := context.Background()
		c, err := js.Consumer(ctx, stream, durable)
		if err != nil {
			return false
		}
		info, err := c.Info(ctx)
		if err != nil || info.NumPending != 0 || info.NumAckPending != 0 {
			return false
		}
		s, err := js.Stream(ctx, stream)
		if err != nil {
			return false
		}
		sinfo, err := s.Info(ctx)
		return err == nil && info.Delivered.Stream >= sinfo.State.LastSeq
	}, timeout, 20*time.Millisecond, "consumer %s did not drain", durable)
}
