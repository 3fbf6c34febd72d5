package pglocal

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// ensureDatabase creates the role and the database named Database, unless they exist, and sets
// the role's password when there is one (Config.Password, or password mode's). The role may log in, create
// databases (which a test harness needs) and create roles (which the migrations need); it is
// not a superuser.
func ensureDatabase(ctx context.Context, conn *pgx.Conn, password string) error {
	ident := pgx.Identifier{Database}.Sanitize()
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)", Database).Scan(&exists); err != nil {
		return fmt.Errorf("look up role %s: %w", Database, err)
	}
	// CREATEROLE lets the migrations make the services' roles (see internal/pgrole); a
	// cluster made before they existed gets it on its next start.
	stmt := "ALTER ROLE " + ident + " CREATEROLE"
	if !exists {
		stmt = "CREATE ROLE " + ident + " LOGIN CREATEDB CREATEROLE"
	}
	if _, err := conn.Exec(ctx, stmt); err != nil {
		return fmt.Errorf("create role %s: %w", Database, err)
	}
	// The password before the database: clients and probes connect to the database, so none
	// of them gets in before the password they are given works.
	if password != "" {
		if err := setPassword(ctx, conn, Database, password); err != nil {
			return err
		}
	}
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", Database).Scan(&exists); err != nil {
		return fmt.Errorf("look up database %s: %w", Database, err)
	}
	if !exists {
		if _, err := conn.Exec(ctx, "CREATE DATABASE "+ident+" OWNER "+ident); err != nil {
			return fmt.Errorf("create database %s: %w", Database, err)
		}
	}
	return nil
}
