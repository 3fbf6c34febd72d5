package pglocal

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// superuser is the superuser of every cluster pglocal creates (initdbArgs).
const superuser = "postgres"

// Password mode (Config.PasswordsDir): every connection gives a password, checked with
// scram-sha-256, over loopback and the Unix socket alike; pglocal's pg_hba.conf has no trust
// line. The passwords are generated once and kept, one file per role, in PasswordsDir.

// passwordHBARules is the pg_hba.conf of password mode.
func passwordHBARules() string {
	return "# Written by pglocal at every start; changes are overwritten.\n" +
		"local all all               scram-sha-256\n" +
		"host  all all 127.0.0.1/32  scram-sha-256\n" +
		"host  all all ::1/128       scram-sha-256\n"
}

// bootstrapHBARules admit only the superuser, only over the Unix socket (in the data
// directory, which only the cluster's owner may enter), without a password: for the one start
// at which a cluster made without passwords gets its superuser's.
func bootstrapHBARules() string {
	return "# Written by pglocal to give the superuser a password; replaced at once.\n" +
		"local all " + superuser + " trust\n"
}

// keptPassword returns the password kept for role in dir, generating and keeping one the first
// time. The directory is made with mode 0700 and the file with 0600, for the calling user.
func keptPassword(dir, role string) (string, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("passwords directory: %w", err)
	}
	path := filepath.Join(dir, role)
	if b, err := os.ReadFile(path); err == nil { //nolint:gosec // The file is pglocal's own.
		if len(b) == 0 {
			return "", fmt.Errorf("password file %s is empty; remove it to have a new password made", path)
		}
		return string(b), nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("read password of %s: %w", role, err)
	}
	raw := make([]byte, 24)
	if _, err := rand.Read(raw); err != nil {
		return "", fmt.Errorf("generate password: %w", err)
	}
	// URL-safe base64: printable ASCII, and nothing a connection URL must escape.
	pw := base64.RawURLEncoding.EncodeToString(raw)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600) //nolint:gosec // As above.
	if err != nil {
		return "", fmt.Errorf("keep password of %s: %w", role, err)
	}
	if _, err := f.WriteString(pw); err != nil {
		_ = f.Close()
		return "", fmt.Errorf("keep password of %s: %w", role, err)
	}
	if err := f.Close(); err != nil {
		return "", fmt.Errorf("keep password of %s: %w", role, err)
	}
	return pw, nil
}

// superuserConfig is how Start connects as the superuser: over TCP on loopback with its
// password in password mode, without one otherwise, or over the Unix socket while
// bootstrapping.
func (s *Server) superuserConfig(port int, viaSocket bool) (*pgx.ConnConfig, error) {
	host := loopbackIPv4
	if viaSocket {
		host = s.sockDir
	}
	u := url.URL{Scheme: "postgres", User: url.User(superuser), Path: "/postgres",
		RawQuery: "sslmode=disable&connect_timeout=5&host=" + url.QueryEscape(host) + "&port=" + strconv.Itoa(port)}
	if s.superPassword != "" && !viaSocket {
		u.User = url.UserPassword(superuser, s.superPassword)
	}
	config, err := pgx.ParseConfig(u.String())
	if err != nil {
		return nil, fmt.Errorf("superuser connection config: %w", err)
	}
	return config, nil
}

// isPasswordRefused reports whether err is the server refusing a password, as it refuses the
// superuser's password when the cluster has none yet.
func isPasswordRefused(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "28P01"
}

// bootstrapPasswords gives the superuser of a cluster made without passwords its password:
// it starts the server with bootstrapHBARules, sets the password over the Unix socket, then
// serves passwordHBARules from then on and connects as the superuser over TCP with it.
func (s *Server) bootstrapPasswords(ctx context.Context, bins binaries, o owner) (*pgx.Conn, error) {
	if _, err := writeHBAFile(s.cfg.Dir, o, bootstrapHBARules()); err != nil {
		return nil, err
	}
	s.bootstrapping = true
	conn, err := s.launch(ctx, bins, o)
	s.bootstrapping = false
	if err != nil {
		return nil, err
	}
	err = setPassword(ctx, conn, superuser, s.superPassword)
	if err == nil {
		_, err = writeHBAFile(s.cfg.Dir, o, passwordHBARules())
	}
	if err == nil {
		_, err = conn.Exec(ctx, "SELECT pg_reload_conf()")
	}
	if closeErr := conn.Close(context.WithoutCancel(ctx)); err == nil {
		err = closeErr
	}
	if err == nil {
		conn, err = s.connectAfterReload(ctx)
	}
	if err != nil {
		return nil, fmt.Errorf("give the superuser a password: %w", err)
	}
	s.cfg.Logger.InfoContext(ctx, "local PostgreSQL: the cluster now takes passwords only", "passwords", s.cfg.PasswordsDir)
	return conn, nil
}

// connectAfterReload connects as the superuser with its password once the server has read the
// new pg_hba.conf, which it does a moment after pg_reload_conf returns.
func (s *Server) connectAfterReload(ctx context.Context) (*pgx.Conn, error) {
	config, err := s.superuserConfig(s.port, false)
	if err != nil {
		return nil, err
	}
	for attempt := 1; ; attempt++ {
		conn, err := pgx.ConnectConfig(ctx, config)
		if err == nil || attempt == 100 || ctx.Err() != nil {
			return conn, err
		}
		select {
		case <-ctx.Done():
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Login lets role log in with a password kept for it in Config.PasswordsDir, and returns the
// URL that connects as role to the database named Database. It needs password mode. The role
// must exist (the migrations make the services' roles).
func (s *Server) Login(ctx context.Context, role string) (string, error) {
	if s.cfg.PasswordsDir == "" {
		return "", errors.New("pglocal: Login needs Config.PasswordsDir")
	}
	pw, err := keptPassword(s.cfg.PasswordsDir, role)
	if err != nil {
		return "", err
	}
	config, err := s.superuserConfig(s.port, false)
	if err != nil {
		return "", err
	}
	conn, err := pgx.ConnectConfig(ctx, config)
	if err != nil {
		return "", fmt.Errorf("connect as superuser: %w", err)
	}
	defer func() { _ = conn.Close(context.WithoutCancel(ctx)) }()
	if _, err := conn.Exec(ctx, "ALTER ROLE "+pgx.Identifier{role}.Sanitize()+" LOGIN"); err != nil {
		return "", fmt.Errorf("let role %s log in: %w", role, err)
	}
	if err := setPassword(ctx, conn, role, pw); err != nil {
		return "", err
	}
	return s.urlFor(role, pw), nil
}

// urlFor is the URL that connects as role, with password pw when it is not empty, to the
// database named Database over TCP on 127.0.0.1.
func (s *Server) urlFor(role, pw string) string {
	u := url.URL{Scheme: "postgres", User: url.User(role), Host: "127.0.0.1:" + strconv.Itoa(s.port),
		Path: "/" + Database, RawQuery: "sslmode=disable"}
	if pw != "" {
		u.User = url.UserPassword(role, pw)
	}
	return u.String()
}
