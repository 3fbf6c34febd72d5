package main

import (
	"bytes"
	"flag"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/convergence-dev/convergence/internal/platform"
)

func TestBindEnv_FlagsReadTheirEnvironmentNamesAndAliases(t *testing.T) {
	t.Parallel()
	fs, cfg := serveFlags(t, "-target=api")
	env := map[string]string{
		"CONVERGENCE_HTTP_ADDR":   ":4000",
		"CONVERGENCE_DATA_DIR":    "/var/lib/convergence",
		"CONVERGENCE_ADMIN_TOKEN": "tok",
		"CONVERGENCE_TARGET":      "metering", // The command line wins.
		"DATABASE_URL":            "postgres://db/x",
		"NATS_URL":                "nats://nats:4222",
	}
	require.NoError(t, bindEnv(fs, func(k string) (string, bool) { v, ok := env[k]; return v, ok }))
	require.Equal(t, ":4000", cfg.HTTPAddr)
	require.Equal(t, "/var/lib/convergence", cfg.DataDir)
	require.Equal(t, "tok", cfg.API.AdminToken)
	require.Equal(t, "api", cfg.Target)
	require.Equal(t, "postgres://db/x", cfg.DatabaseURL)
	require.Equal(t, "nats://nats:4222", cfg.NATSURL)
}

func TestBindEnv_FileVariables_ReadTheSecretFromTheFile(t *testing.T) {
	t.Parallel()
	fs, cfg := serveFlags(t)
	dir := t.TempDir()
	token, dbURL := filepath.Join(dir, "token"), filepath.Join(dir, "db")
	require.NoError(t, os.WriteFile(token, []byte("s3cret\n"), 0o600))
	require.NoError(t, os.WriteFile(dbURL, []byte("postgres://u:p@db/x"), 0o600))
	env := map[string]string{
		"CONVERGENCE_ADMIN_TOKEN_FILE": token,
		"DATABASE_URL_FILE":            dbURL,
		"CONVERGENCE_HTTP_ADDR":        ":4000",
		"CONVERGENCE_HTTP_ADDR_FILE":   filepath.Join(dir, "missing"), // The variable itself wins.
	}
	require.NoError(t, bindEnv(fs, func(k string) (string, bool) { v, ok := env[k]; return v, ok }))
	require.Equal(t, "s3cret", cfg.API.AdminToken)
	require.Equal(t, "postgres://u:p@db/x", cfg.DatabaseURL)
	require.Equal(t, ":4000", cfg.HTTPAddr)

	fs, _ = serveFlags(t)
	env = map[string]string{"CONVERGENCE_ADMIN_TOKEN_FILE": filepath.Join(dir, "missing")}
	err := bindEnv(fs, func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	require.ErrorContains(t, err, "CONVERGENCE_ADMIN_TOKEN_FILE")
	require.ErrorContains(t, err, "no such file")

	// A file of several lines where a path belongs: refused, its content never shown.
	creds := filepath.Join(dir, "nats.creds")
	require.NoError(t, os.WriteFile(creds, []byte("-----BEGIN NATS USER JWT-----\nsecret-seed\n"), 0o600))
	fs, _ = serveFlags(t)
	env = map[string]string{"CONVERGENCE_NATS_CREDS_FILE": creds}
	err = bindEnv(fs, func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	require.ErrorContains(t, err, "holds more than one line")
	require.ErrorContains(t, err, "set CONVERGENCE_NATS_CREDS to its path")
	require.NotContains(t, err.Error(), "secret-seed")
}

func TestBindEnv_FlagWithAFileFlagOfItsOwn_LeavesTheFileVariableToIt(t *testing.T) {
	t.Parallel()
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	password := fs.String("postgres.password", "", "")
	passwordFile := fs.String("postgres.password-file", "", "")
	require.NoError(t, fs.Parse(nil))
	env := map[string]string{"CONVERGENCE_POSTGRES_PASSWORD_FILE": "/run/secrets/pg"}
	require.NoError(t, bindEnv(fs, func(k string) (string, bool) { v, ok := env[k]; return v, ok }))
	require.Empty(t, *password)
	require.Equal(t, "/run/secrets/pg", *passwordFile)
}

func TestBindEnv_BadValue_NamesTheVariable(t *testing.T) {
	t.Parallel()
	fs, _ := serveFlags(t)
	err := bindEnv(fs, func(k string) (string, bool) { return "not-a-bool", k == "CONVERGENCE_MIGRATE" })
	require.ErrorContains(t, err, "CONVERGENCE_MIGRATE")
}

func TestRun_Commands(t *testing.T) {
	t.Parallel()
	var out, errOut bytes.Buffer
	require.NoError(t, run([]string{"version"}, &out, &errOut))
	require.Contains(t, out.String(), "convergence ")
	require.ErrorContains(t, run([]string{"frobnicate"}, &out, &errOut), `unknown command "frobnicate"`)
	require.ErrorContains(t, run(nil, &out, &errOut), "no command")
	require.ErrorContains(t, run([]string{"serve", "-log.level=loud"}, &out, &errOut), "log.level")
}

// serveFlags returns the flags of `convergence serve` parsed from args, and the configuration
// they set.
func serveFlags(t *testing.T, args ...string) (*flag.FlagSet, *platform.Config) {
	t.Helper()
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	cfg := &platform.Config{}
	cfg.RegisterFlags(fs)
	require.NoError(t, fs.Parse(args))
	return fs, cfg
}
