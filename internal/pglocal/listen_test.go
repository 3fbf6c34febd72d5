//go:build linux

package pglocal_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"

	"github.com/convergence-dev/convergence/internal/pglocal"
)

func TestStart_ListenBeyondLoopbackWithPassword_OnlyConvergenceRoleWithPasswordGetsIn(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	cfg.ListenAddresses = "*"
	cfg.Password = "s3cret pass"
	cfg.Port = freePort(t)
	s := start(t, cfg)
	host := nonLoopbackIPv4(t)

	require.Equal(t, "convergence", queryString(t, remoteURL(host, cfg.Port, "convergence", "s3cret pass"), "SELECT current_user"),
		"the right password lets the role in from a non-loopback address")
	requireAuthFails(t, remoteURL(host, cfg.Port, "convergence", "wrong"), "28P01")
	requireAuthFails(t, remoteURL(host, cfg.Port, "convergence", ""), "")
	requireAuthFails(t, remoteURL(host, cfg.Port, "postgres", "s3cret pass"), "28000") // no pg_hba line admits the superuser
	require.Equal(t, 1, queryInt(t, s.URL(), "SELECT 1"), "loopback stays trusted, without a password")
	require.NoError(t, s.Stop(t.Context()))
}

func TestStart_PasswordChangedBetweenStarts_OnlyNewPasswordWorks(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	cfg.ListenAddresses = "0.0.0.0"
	cfg.Port = freePort(t)
	host := nonLoopbackIPv4(t)

	cfg.Password = "first"
	s := start(t, cfg)
	require.Equal(t, 1, queryInt(t, remoteURL(host, cfg.Port, "convergence", "first"), "SELECT 1"))
	require.NoError(t, s.Stop(t.Context()))

	cfg.Password = "second"
	s = start(t, cfg)
	requireAuthFails(t, remoteURL(host, cfg.Port, "convergence", "first"), "28P01")
	require.Equal(t, 1, queryInt(t, remoteURL(host, cfg.Port, "convergence", "second"), "SELECT 1"))
	require.NoError(t, s.Stop(t.Context()))
}

func TestStart_PasswordSetListenOnLoopback_RolePasswordStoredAsSCRAMVerifier(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	cfg.Password = "only-a-verifier"
	s := start(t, cfg)

	conn := connect(t, superuserURL(t, s.URL()))
	var stored string
	require.NoError(t, conn.QueryRow(t.Context(), "SELECT rolpassword FROM pg_authid WHERE rolname = 'convergence'").Scan(&stored))
	require.True(t, strings.HasPrefix(stored, "SCRAM-SHA-256$4096:"), "stored %q", stored)
	require.NotContains(t, stored, "only-a-verifier")
	require.NoError(t, s.Stop(t.Context()))
}

func TestStart_BadListenOrPasswordConfig_ErrorSaysWhat(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, listen, password, want string
	}{
		{"wildcard without password", "*", "", "set Password"},
		{"interface address without password", "127.0.0.1,10.1.2.3", "", "set Password"},
		{"non-ASCII password", "0.0.0.0", "pässword", "printable ASCII"},
		{"control character in password", "0.0.0.0", "a\nb", "printable ASCII"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := testConfig(t)
			cfg.ListenAddresses, cfg.Password = tc.listen, tc.password
			_, err := pglocal.Start(t.Context(), cfg)
			require.ErrorContains(t, err, tc.want)
		})
	}
}

func TestStart_ServerLogLevelInfo_ServerLinesLoggedAtInfo(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	rec := &recordingHandler{}
	cfg.Logger = slog.New(rec)
	cfg.ServerLogLevel = slog.LevelInfo
	s := start(t, cfg)
	require.NoError(t, s.Stop(t.Context()))

	require.NotEmpty(t, rec.messages(slog.LevelInfo, "postgres log"), "the server's start and shutdown lines")
	require.Empty(t, rec.messages(slog.LevelDebug, "postgres log"))
}

// remoteURL connects as role with password over TCP to host.
func remoteURL(host string, port int, role, password string) string {
	u := url.URL{Scheme: "postgres", Host: net.JoinHostPort(host, strconv.Itoa(port)), Path: "/convergence",
		RawQuery: "sslmode=disable&connect_timeout=5"}
	u.User = url.User(role)
	if password != "" {
		u.User = url.UserPassword(role, password)
	}
	return u.String()
}

// superuserURL is url with the role replaced by the superuser postgres.
func superuserURL(t *testing.T, raw string) string {
	t.Helper()
	u, err := url.Parse(raw)
	require.NoError(t, err)
	u.User = url.User("postgres")
	return u.String()
}

// requireAuthFails checks that connecting fails, with the given SQLSTATE unless it is empty.
func requireAuthFails(t *testing.T, url, sqlState string) {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), url)
	if err == nil {
		_ = conn.Close(context.Background())
	}
	require.Error(t, err, "connecting as %s must fail", url)
	if sqlState != "" {
		var pgErr *pgconn.PgError
		require.ErrorAs(t, err, &pgErr, "want a server error")
		require.Equal(t, sqlState, pgErr.Code, pgErr.Message)
	}
}

// nonLoopbackIPv4 returns an IPv4 address of this machine other than loopback.
func nonLoopbackIPv4(t *testing.T) string {
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

// freePort returns a TCP port that was free on every interface a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := (&net.ListenConfig{}).Listen(t.Context(), "tcp4", "0.0.0.0:0")
	require.NoError(t, err)
	port := ln.Addr().(*net.TCPAddr).Port
	require.NoError(t, ln.Close())
	return port
}

// recordingHandler keeps the level and message of every record.
type recordingHandler struct {
	mu      sync.Mutex
	records []string
}

func (h *recordingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *recordingHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.records = append(h.records, fmt.Sprintf("%s %s", r.Level, r.Message))
	return nil
}
func (h *recordingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *recordingHandler) WithGroup(string) slog.Handler      { return h }

func (h *recordingHandler) messages(level slog.Level, msg string) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for _, r := range h.records {
		if r == level.String()+" "+msg {
			out = append(out, r)
		}
	}
	return out
}
