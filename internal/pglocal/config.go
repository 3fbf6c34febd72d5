package pglocal

import (
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
)

// Database is the name of both the role and the database that Start creates; URL connects as
// that role to that database.
const Database = "convergence"

// Config says where and how Start runs the server.
type Config struct {
	// Dir is the data directory. Start initializes a cluster in it when it is missing or empty,
	// and reuses the cluster in it otherwise. Required. When the process is root, every parent
	// of Dir must be searchable by the postgres user.
	Dir string

	// Logger receives one line at Info when the server is ready, a warning when a stale
	// postmaster.pid is removed, and the server's own log lines at Debug. Nil discards.
	Logger *slog.Logger

	// Port is the TCP port on 127.0.0.1. Zero picks a free port on every start.
	Port int

	// NoSync trades durability for speed, for tests: initdb skips fsync and the server runs
	// with fsync=off and full_page_writes=off. Committed data survives a crash of the server
	// or of this process, but not a crash of the machine.
	NoSync bool

	// InitCache, when set, is a directory that keeps one freshly initialized cluster per
	// PostgreSQL version and owner. A new Dir is then filled by copying that cluster instead
	// of running initdb, which is most of a first start. The cache is built on first use and
	// is safe to share between concurrent processes of the same user. It must be owned by the
	// current user and not writable by others; otherwise Start warns and runs initdb.
	InitCache string

	// Settings are extra server parameters, passed as `-c name=value` after the ones Start
	// sets itself, so they may override them (for example "max_connections").
	Settings map[string]string

	// BinDir is the directory holding the postgres and initdb binaries. Empty searches PATH,
	// then /usr/lib/postgresql/*/bin, newest version first.
	BinDir string
}

// validate checks cfg and fills in the defaults.
func (cfg Config) validate() (Config, error) {
	if cfg.Dir == "" {
		return cfg, errors.New("config: Dir is required")
	}
	if cfg.Port < 0 || cfg.Port > 65535 {
		return cfg, fmt.Errorf("config: Port %d is out of range", cfg.Port)
	}
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return cfg, fmt.Errorf("config: resolve Dir: %w", err)
	}
	cfg.Dir = dir
	if cfg.InitCache != "" {
		if cfg.InitCache, err = filepath.Abs(cfg.InitCache); err != nil {
			return cfg, fmt.Errorf("config: resolve InitCache: %w", err)
		}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return cfg, nil
}
