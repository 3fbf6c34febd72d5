package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/convergence-dev/convergence/internal/pglocal"
)

// postgresStopTimeout bounds a clean shutdown; docker stops the compose service with a longer
// grace period than this.
const postgresStopTimeout = 20 * time.Second

// runPostgres runs a standalone PostgreSQL until SIGINT or SIGTERM: pglocal's server from this
// machine's (or this image's) binaries, with the role and database "convergence", for the
// compose stack. With -probe it only checks that the server answers and exits.
func runPostgres(args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("convergence postgres", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg pglocal.Config
	settings := settingsFlag{}
	fs.StringVar(&cfg.Dir, "postgres.dir", ".convergence/postgres", "data directory; a cluster is created in it when it is empty")
	fs.StringVar(&cfg.ListenAddresses, "postgres.listen", "127.0.0.1", "listen_addresses; 0.0.0.0 or * for every interface, which needs a password")
	fs.IntVar(&cfg.Port, "postgres.port", 5432, "TCP port")
	fs.StringVar(&cfg.Password, "postgres.password", "", "password the convergence role gives from non-loopback addresses (scram-sha-256)")
	passwordFile := fs.String("postgres.password-file", "", "file holding the password, such as a Docker secret (instead of -postgres.password)")
	fs.StringVar(&cfg.BinDir, "postgres.bin-dir", "", "directory of postgres and initdb; empty searches PATH, then /usr/lib/postgresql/*/bin")
	fs.Var(settings, "postgres.set", "server parameter name=value; repeat the flag, or separate several with commas")
	probe := fs.Bool("probe", false, "instead of running a server, check that the one on -postgres.port answers on 127.0.0.1, and exit")
	var logs logOptions
	logs.register(fs)
	if help, err := parseFlags(fs, args); help || err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *probe {
		return probePostgres(ctx, cfg.Port)
	}
	if *passwordFile != "" {
		if cfg.Password != "" {
			return errors.New("postgres: set -postgres.password or -postgres.password-file, not both")
		}
		b, err := os.ReadFile(*passwordFile)
		if err != nil {
			return fmt.Errorf("postgres.password-file: %w", err)
		}
		cfg.Password = strings.TrimRight(string(b), "\r\n")
	}
	logger, err := logs.logger(stderr)
	if err != nil {
		return err
	}
	cfg.Settings = settings
	return servePostgres(ctx, cfg, logger)
}

// servePostgres runs the server until ctx is done, then stops it. It returns an error when the
// server cannot start, exits on its own, or does not stop cleanly.
func servePostgres(ctx context.Context, cfg pglocal.Config, logger *slog.Logger) error {
	cfg.Logger = logger
	// The server's own log (start, checkpoints, refused logins) is what this process is for.
	cfg.ServerLogLevel = slog.LevelInfo
	s, err := pglocal.Start(ctx, cfg)
	if err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	select {
	case <-ctx.Done():
		logger.Info("postgres stopping")
	case <-s.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), postgresStopTimeout)
	defer cancel()
	if err := s.Stop(sctx); err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	logger.Info("postgres stopped")
	return nil
}

// probePostgres connects over loopback, which the server trusts, and runs a query.
func probePostgres(ctx context.Context, port int) error {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	url := fmt.Sprintf("postgres://%s@127.0.0.1:%d/%s?sslmode=disable", pglocal.Database, port, pglocal.Database)
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return fmt.Errorf("probe postgres on port %d: %w", port, err)
	}
	defer func() { _ = conn.Close(context.WithoutCancel(ctx)) }()
	var one int
	if err := conn.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil {
		return fmt.Errorf("probe postgres on port %d: %w", port, err)
	}
	return nil
}

// settingsFlag collects server parameters given as name=value, several per value separated by
// commas, so that one environment variable can carry them all.
type settingsFlag map[string]string

func (s settingsFlag) String() string {
	parts := make([]string, 0, len(s))
	for _, k := range slices.Sorted(maps.Keys(s)) {
		parts = append(parts, k+"="+s[k])
	}
	return strings.Join(parts, ",")
}

func (s settingsFlag) Set(value string) error {
	for _, kv := range strings.Split(value, ",") {
		name, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if !ok || name == "" {
			return fmt.Errorf("%q is not name=value", kv)
		}
		s[name] = v
	}
	return nil
}
