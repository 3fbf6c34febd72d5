//go:build linux

package pglocal_test

import (
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/convergence-dev/convergence/internal/pglocal"
)

func TestStart_PasswordMode_NothingGetsInWithoutItsPassword(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	cfg.PasswordsDir = filepath.Join(tempDir(t), "passwords")
	s := start(t, cfg)

	require.Equal(t, "convergence", queryString(t, s.URL(), "SELECT current_user"), "URL carries the kept password")
	port := portOf(t, s.URL())
	requireAuthFails(t, remoteURL("127.0.0.1", port, "convergence", ""), "")
	requireAuthFails(t, remoteURL("127.0.0.1", port, "convergence", "wrong"), "28P01")
	requireAuthFails(t, remoteURL("127.0.0.1", port, "postgres", ""), "")
	requireAuthFails(t, socketURL(cfg.Dir, port, "postgres"), "") // nor over the Unix socket

	hba, err := os.ReadFile(filepath.Join(cfg.Dir, "pglocal_hba.conf"))
	require.NoError(t, err)
	require.NotContains(t, string(hba), "trust")
	for _, role := range []string{"postgres", "convergence"} {
		info, err := os.Stat(filepath.Join(cfg.PasswordsDir, role))
		require.NoError(t, err)
		require.Equal(t, os.FileMode(0o600), info.Mode().Perm(), role)
	}
	info, err := os.Stat(cfg.PasswordsDir)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o700), info.Mode().Perm())

	// A login for a role the migrations made, as the platform gives each service.
	exec1(t, s.URL(), "CREATE ROLE convergence_api NOLOGIN")
	apiURL, err := s.Login(t.Context(), "convergence_api")
	require.NoError(t, err)
	require.Equal(t, "convergence_api", queryString(t, apiURL, "SELECT current_user"))
	requireAuthFails(t, remoteURL("127.0.0.1", port, "convergence_api", ""), "")

	require.NoError(t, s.Stop(t.Context()))
	s = start(t, cfg)
	require.Equal(t, 1, queryInt(t, s.URL(), "SELECT 1"), "the same passwords on the next start")
	again, err := s.Login(t.Context(), "convergence_api")
	require.NoError(t, err)
	require.Equal(t, 1, queryInt(t, again, "SELECT 1"))
	require.NoError(t, s.Stop(t.Context()))
}

func TestStart_PasswordModeOnAClusterMadeWithout_PasswordsGivenAndDataKept(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	s := start(t, cfg)
	exec1(t, s.URL(), "CREATE TABLE kept (v text)", "INSERT INTO kept VALUES ('survives')")
	require.NoError(t, s.Stop(t.Context()))

	cfg.PasswordsDir = filepath.Join(tempDir(t), "passwords")
	s = start(t, cfg)
	require.Equal(t, "survives", queryString(t, s.URL(), "SELECT v FROM kept"))
	requireAuthFails(t, remoteURL("127.0.0.1", portOf(t, s.URL()), "convergence", ""), "")
	require.NoError(t, s.Stop(t.Context()))
}

func TestStart_PasswordModeConfig_ErrorSaysWhat(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	cfg.PasswordsDir, cfg.Password = t.TempDir(), "also"
	_, err := pglocal.Start(t.Context(), cfg)
	require.ErrorContains(t, err, "not both")
	cfg.Password, cfg.ListenAddresses = "", "0.0.0.0"
	_, err = pglocal.Start(t.Context(), cfg)
	require.ErrorContains(t, err, "loopback")
}

// portOf is the port of a connection URL.
func portOf(t *testing.T, raw string) int {
	t.Helper()
	u, err := url.Parse(raw)
	require.NoError(t, err)
	var port int
	_, err = fmt.Sscan(u.Port(), &port)
	require.NoError(t, err)
	return port
}

// socketURL connects as role without a password over the Unix socket in dir.
func socketURL(dir string, port int, role string) string {
	return "postgres://" + role + "@/convergence?sslmode=disable&host=" + url.QueryEscape(dir) + "&port=" + strings.TrimSpace(fmt.Sprint(port))
}
