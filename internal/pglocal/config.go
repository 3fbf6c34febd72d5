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
	// postmaster.pid is removed, and the server's own log lines at ServerLogLevel (Debug
	// unless set). Nil discards.
	Logger *slog.Logger

	// Port is the TCP port the server listens on. Zero picks a free port on every start.
	Port int

	// ListenAddresses is the server's listen_addresses: a comma-separated list of host names
	// and IP addresses, where "*" and "0.0.0.0" mean every IPv4 interface. Empty is
	// "127.0.0.1". The server also listens on 127.0.0.1 whatever the list says, since Start
	// reaches it there. An address beyond loopback requires Password.
	ListenAddresses string

	// Password, when set, is what the role named Database must give when it connects from
	// anywhere but loopback, checked with scram-sha-256. Start stores the password's SCRAM
	// verifier in the role at every start (the password itself never reaches the server), and
	// serves a pg_hba.conf of its own that admits only that role from other addresses, so the
	// superuser never logs in remotely. Connections over loopback and the Unix socket stay
	// trusted: this suits a server alone in its container, or on a machine whose local users
	// may all reach it. The password must be printable ASCII, so that every client derives the
	// same key from it (SASLprep leaves printable ASCII unchanged).
	Password string

	// PasswordsDir, when set, puts the server in password mode: no connection gets in without
	// a password, checked with scram-sha-256, over loopback and the Unix socket too (its
	// pg_hba.conf has no trust line). The passwords are generated on first use and kept in
	// PasswordsDir (mode 0700), one file per role (0600): the superuser's, the role named
	// Database's, and those Server.Login makes. A cluster made without passwords gets them at
	// its first start in password mode, its data kept. It serves loopback only, and excludes
	// Password.
	PasswordsDir string

	// ServerLogLevel is the level at which the server's own log lines reach Logger. Nil is
	// Debug; a server that is the whole point of its process (a container's) logs at Info.
	ServerLogLevel slog.Leveler

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
	if cfg.ListenAddresses == "" {
		cfg.ListenAddresses = loopbackIPv4
	}
	if cfg.Password != "" && cfg.PasswordsDir != "" {
		return cfg, errors.New("config: set Password or PasswordsDir, not both")
	}
	if cfg.PasswordsDir != "" && !loopbackOnly(cfg.ListenAddresses) {
		return cfg, fmt.Errorf("config: ListenAddresses %q reaches beyond loopback, which password mode does not serve; use Password", cfg.ListenAddresses)
	}
	if cfg.Password == "" && !loopbackOnly(cfg.ListenAddresses) {
		return cfg, fmt.Errorf("config: ListenAddresses %q reaches beyond loopback: set Password, "+
			"which clients from other addresses must give", cfg.ListenAddresses)
	}
	for _, r := range cfg.Password {
		if r < ' ' || r > '~' {
			return cfg, errors.New("config: Password must be printable ASCII")
		}
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
	if cfg.ServerLogLevel == nil {
		cfg.ServerLogLevel = slog.LevelDebug
	}
	return cfg, nil
}
