package main

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/convergence-dev/convergence/internal/pglocal"
)

func TestServePostgres_ListensBeyondLoopbackWithPasswordAndProbeAnswers(t *testing.T) {
	t.Parallel()
	port := freeTCPPort(t)
	cfg := pglocal.Config{
		Dir:             filepath.Join(reachableTempDir(t), "data"),
		ListenAddresses: "0.0.0.0",
		Port:            port,
		Password:        "compose-secret",
		Settings:        map[string]string{"max_connections": "42"},
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- servePostgres(ctx, cfg, slog.New(slog.NewTextHandler(t.Output(), nil))) }()
	require.Eventually(t, func() bool { return probePostgres(t.Context(), port) == nil }, time.Minute, 100*time.Millisecond,
		"the probe succeeds once the server is ready")

	u := url.URL{Scheme: "postgres", User: url.UserPassword("convergence", "compose-secret"),
		Host: net.JoinHostPort(nonLoopbackIP(t), strconv.Itoa(port)), Path: "/convergence", RawQuery: "sslmode=disable"}
	conn, err := pgx.Connect(t.Context(), u.String())
	require.NoError(t, err, "a client from another address gets in with the password")
	var maxConns string
	require.NoError(t, conn.QueryRow(t.Context(), "SHOW max_connections").Scan(&maxConns))
	require.Equal(t, "42", maxConns)
	require.NoError(t, conn.Close(t.Context()))

	cancel()
	select {
	case err := <-done:
		require.NoError(t, err, "a clean stop")
	case <-time.After(time.Minute):
		t.Fatal("servePostgres did not return after its context ended")
	}
	require.Error(t, probePostgres(t.Context(), port), "nothing answers once stopped")
}

func TestRunPostgres_BadInvocations_SayWhatIsWrong(t *testing.T) {
	t.Parallel()
	pwFile := filepath.Join(t.TempDir(), "pw")
	require.NoError(t, os.WriteFile(pwFile, []byte("x\n"), 0o600))
	port := strconv.Itoa(freeTCPPort(t))

	require.ErrorContains(t, runPostgres([]string{"-postgres.password=a", "-postgres.password-file=" + pwFile}, io.Discard), "not both")
	require.ErrorContains(t, runPostgres([]string{"-postgres.set=max_connections"}, io.Discard), "not name=value")
	require.ErrorContains(t, runPostgres([]string{"-probe", "-postgres.port=" + port}, io.Discard), "probe postgres on port "+port)
	require.ErrorContains(t, runPostgres([]string{"-postgres.listen=0.0.0.0", "-postgres.dir=" + t.TempDir()}, io.Discard), "set Password")
}

func TestSettingsFlag_RepeatedAndCommaSeparated(t *testing.T) {
	t.Parallel()
	s := settingsFlag{}
	require.NoError(t, s.Set("max_connections=200,jit=off"))
	require.NoError(t, s.Set(" shared_buffers=128MB "))
	require.Equal(t, settingsFlag{"max_connections": "200", "jit": "off", "shared_buffers": "128MB"}, s)
	require.Equal(t, "jit=off,max_connections=200,shared_buffers=128MB", s.String())
}

// reachableTempDir is a temporary directory the postgres user can pass through when the test
// runs as root (t.TempDir's parent has mode 0700).
func reachableTempDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	require.NoError(t, os.Chmod(filepath.Dir(dir), 0o711))
	return dir
}

// nonLoopbackIP returns an IPv4 address of this machine other than loopback.
func nonLoopbackIP(t *testing.T) string {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	require.NoError(t, err)
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && !n.IP.IsLoopback() {
			return n.IP.String()
		}
	}
	t.Fatal("this test needs an IPv4 address other than loopback on some interface (a Docker bridge will do)")
	return ""
}
