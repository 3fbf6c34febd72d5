// Package migrations holds the numbered SQL migrations of the platform's one database and
// applies them with goose. The files are embedded, so the binary migrates on its own.
package migrations

import (
	"context"
	"database/sql"
	"embed"
	"fmt"
	"io/fs"
	"log/slog"

	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" database/sql driver
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"
)

//go:embed *.sql
var files embed.FS

// FS returns the embedded migration files.
func FS() fs.FS { return files }

// Up applies every pending migration to the database at url. It is idempotent and safe to call
// from several processes at once: goose takes a session advisory lock for the duration.
//
// The login needs CREATEROLE (or to be a superuser): the migrations make the services'
// database roles (internal/pgrole) and make the login a member of each.
func Up(ctx context.Context, url string) error {
	return UpTo(ctx, url, goose.MaxVersion)
}

// UpTo applies the pending migrations up to and including version, as Up does.
func UpTo(ctx context.Context, url string, version int64) error {
	db, err := sql.Open("pgx", url)
	if err != nil {
		return fmt.Errorf("open database: %w", err)
	}
	defer db.Close()
	locker, err := lock.NewPostgresSessionLocker()
	if err != nil {
		return fmt.Errorf("migration lock: %w", err)
	}
	// Out-of-order: a migration numbered below one already applied (merged from a branch that
	// started earlier) is applied rather than refused.
	p, err := goose.NewProvider(goose.DialectPostgres, db, files, goose.WithSessionLocker(locker), goose.WithAllowOutofOrder(true))
	if err != nil {
		return fmt.Errorf("migration provider: %w", err)
	}
	results, err := p.UpTo(ctx, version)
	if err != nil {
		return fmt.Errorf("apply migrations: %w", err)
	}
	for _, r := range results {
		slog.Default().DebugContext(ctx, "migration applied", "version", r.Source.Version, "duration", r.Duration)
	}
	return nil
}
