package pgtest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"

	"github.com/jackc/pgx/v5"

	"github.com/convergence-dev/convergence/migrations"
)

// templateLockKey is the advisory lock that serializes building template databases across
// every process that shares a server. Advisory locks are per database, and all of them connect
// to the database of the same base URL.
const templateLockKey int64 = 0x636f6e76_70677473 // "convpgts"

// templateName names the template database after a hash of the embedded migrations, so a
// template is never used with migrations other than those it was built from.
func templateName() (string, error) {
	h := sha256.New()
	err := fs.WalkDir(migrations.FS(), ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := fs.ReadFile(migrations.FS(), path)
		if err != nil {
			return err
		}
		_, _ = fmt.Fprintf(h, "%s\x00%d\x00", path, len(data)) // a hash.Hash never fails to write
		_, _ = h.Write(data)
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("hash migrations: %w", err)
	}
	return "pgtest_tpl_" + hex.EncodeToString(h.Sum(nil)[:6]), nil
}

// ensureTemplate returns the name of a template database with every migration applied,
// building it when the server has none. It is safe to call from several processes at once:
// they take turns under an advisory lock, and a template whose build was cut short (it is not
// marked as a template yet) is dropped and built again.
func ensureTemplate(ctx context.Context, baseURL string) (string, error) {
	name, err := templateName()
	if err != nil {
		return "", err
	}
	if err := buildTemplate(ctx, baseURL, name); err != nil {
		return "", fmt.Errorf("template database %s: %w", name, err)
	}
	return name, nil
}

func buildTemplate(ctx context.Context, baseURL, name string) (err error) {
	conn, err := pgx.Connect(ctx, baseURL)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer func() { err = errors.Join(err, conn.Close(context.WithoutCancel(ctx))) }() // closing releases the lock
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", templateLockKey); err != nil {
		return fmt.Errorf("lock: %w", err)
	}

	ident := pgx.Identifier{name}.Sanitize()
	var isTemplate bool
	err = conn.QueryRow(ctx, "SELECT datistemplate FROM pg_database WHERE datname = $1", name).Scan(&isTemplate)
	switch {
	case err == nil && isTemplate:
		return nil
	case err == nil:
		if _, err := conn.Exec(ctx, "DROP DATABASE "+ident+" WITH (FORCE)"); err != nil {
			return fmt.Errorf("drop unfinished: %w", err)
		}
	case !errors.Is(err, pgx.ErrNoRows):
		return fmt.Errorf("look up: %w", err)
	}

	if _, err := conn.Exec(ctx, "CREATE DATABASE "+ident); err != nil {
		return fmt.Errorf("create: %w", err)
	}
	url, err := withDatabase(baseURL, name)
	if err != nil {
		return err
	}
	if err := migrations.Up(ctx, url); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	// A connection to the template would make CREATE DATABASE ... TEMPLATE fail, so none are
	// allowed from now on; datistemplate also marks the build as finished.
	if _, err := conn.Exec(ctx, "ALTER DATABASE "+ident+" WITH IS_TEMPLATE true ALLOW_CONNECTIONS false"); err != nil {
		return fmt.Errorf("mark as template: %w", err)
	}
	return nil
}
