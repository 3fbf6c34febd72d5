package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/convergence-dev/convergence/internal/pgrole"
)

// dropTimeout bounds dropping a test's database in its cleanup.
const dropTimeout = 30 * time.Second

// DB is one test's database.
type DB struct {
	// Name is the database's name, unique to the test.
	Name string
	// URL connects to the database, for a second pool or connection (another process, say).
	URL string
	// Pool is a pool on the database, closed when the test ends. It logs in as the server's
	// superuser (or TEST_DATABASE_URL's role) with every service's schema on its search path,
	// for fixtures and checks; For gives the pool a service itself would have.
	Pool *pgxpool.Pool
}

// New creates a fresh database with every migration applied and returns a pool on it (DB.Pool). The pool
// is closed and the database dropped when t and its subtests end (t.Cleanup), even if other
// connections to it are still open. New is safe to call from parallel tests, which get
// separate databases. It fails t, never skips it, when no PostgreSQL is available.
func New(t testing.TB) *pgxpool.Pool {
	t.Helper()
	return NewDB(t).Pool
}

// NewDB is New that also returns the database's name and URL.
func NewDB(t testing.TB) *DB {
	t.Helper()
	h, err := shared.get()
	if err != nil {
		t.Fatal(err)
	}
	db, err := h.createDatabase(t, h.template)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	return db
}

// NewEmptyDB is NewDB without the migrations: an empty database, for tests of the migrations
// themselves (migrations.UpTo).
func NewEmptyDB(t testing.TB) *DB {
	t.Helper()
	h, err := shared.get()
	if err != nil {
		t.Fatal(err)
	}
	db, err := h.createDatabase(t, "")
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	return db
}

// createDatabase clones template (none: an empty database) into a new database for t and
// registers its cleanup.
func (h *harness) createDatabase(t testing.TB, template string) (*DB, error) {
	ctx := t.Context()
	name, err := databaseName(t.Name())
	if err != nil {
		return nil, err
	}
	dbURL, err := withDatabase(h.baseURL, name)
	if err != nil {
		return nil, err
	}
	create := "CREATE DATABASE " + pgx.Identifier{name}.Sanitize()
	if template != "" {
		create += " TEMPLATE " + pgx.Identifier{template}.Sanitize() + h.createOptions
	}
	if err := h.exec(ctx, create); err != nil {
		return nil, fmt.Errorf("create database %s: %w", name, err)
	}
	// Cleanups run last-registered first: the pool closes before the database is dropped.
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), dropTimeout)
		defer cancel()
		// FORCE ends the connections a test left open. A database that cannot be dropped costs
		// only disk space on a throwaway server, so the test does not fail for it.
		if err := h.exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
			t.Logf("pgtest: drop database %s: %v", name, err)
		}
	})
	cfg, err := pgxpool.ParseConfig(dbURL)
	if err != nil {
		return nil, fmt.Errorf("pool on %s: %w", name, err)
	}
	// The test's own pool sees every service's schema, for fixtures and checks.
	cfg.ConnConfig.RuntimeParams["search_path"] = strings.Join(append(pgrole.Services(), "public"), ", ")
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("pool on %s: %w", name, err)
	}
	t.Cleanup(pool.Close)
	return &DB{Name: name, URL: dbURL, Pool: pool}, nil
}

// exec runs one statement on a connection of its own to the server's base database. CREATE and
// DROP DATABASE cannot run in a transaction, and a connection per call leaves nothing to close
// after the tests.
func (h *harness) exec(ctx context.Context, sql string) (err error) {
	conn, err := pgx.Connect(ctx, h.baseURL)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer func() {
		if closeErr := conn.Close(context.WithoutCancel(ctx)); err == nil {
			err = closeErr
		}
	}()
	_, err = conn.Exec(ctx, sql)
	return err
}

// databaseName makes a database name from the test's name, for whoever looks at the server
// while tests run, and a random suffix. PostgreSQL names hold at most 63 bytes.
func databaseName(testName string) (string, error) {
	var b strings.Builder
	for _, r := range strings.ToLower(testName) {
		if b.Len() >= 40 {
			break
		}
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	suffix := make([]byte, 6)
	if _, err := rand.Read(suffix); err != nil {
		return "", fmt.Errorf("database name: %w", err)
	}
	return "pgtest_" + b.String() + "_" + hex.EncodeToString(suffix), nil
}

// withDatabase returns the connection string base with its database replaced by name. base is
// a URL (postgres://...) or keyword/value settings (host=... dbname=...).
func withDatabase(base, name string) (string, error) {
	if strings.HasPrefix(base, "postgres://") || strings.HasPrefix(base, "postgresql://") {
		u, err := url.Parse(base)
		if err != nil {
			return "", fmt.Errorf("parse database URL: %w", err)
		}
		u.Path = "/" + name
		u.RawPath = ""
		return u.String(), nil
	}
	// A later setting overrides an earlier one.
	return base + " dbname=" + name, nil
}

// NewFor is New with a pool that acts as service's database role (internal/pgrole), as the
// service's own connections do: a statement outside the role's rights fails as it would in
// production.
func NewFor(t testing.TB, service string) *pgxpool.Pool {
	t.Helper()
	return NewDB(t).For(t, service)
}

// For returns a pool on db that acts as service's database role, closed when t ends.
func (db *DB) For(t testing.TB, service string) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(db.URL)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	if err := pgrole.Configure(cfg, service); err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	cfg.MaxConns = 32 // room for a test's parallel spawns or runs
	pool, err := pgxpool.NewWithConfig(t.Context(), cfg)
	if err != nil {
		t.Fatalf("pgtest: pool for %s on %s: %v", service, db.Name, err)
	}
	t.Cleanup(pool.Close)
	return pool
}
