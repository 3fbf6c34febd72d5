// Package pgrole connects each service to PostgreSQL as its own database role, with its own
// schema as its search path. Migration 00007 makes the schemas and the roles and grants
// each role its schema; a connection made here takes the role with SET ROLE as soon as it is
// open, so every statement a service runs is checked against that role's rights, and its
// unqualified table names resolve in its own schema.
//
// The login of the connection (the database URL's user) must be a member of the role: the
// role that ran the migrations is made one, and an operator's per-service login is granted
// the role.
package pgrole

import (
	"context"
	"fmt"
	"slices"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// The services that own a schema.
const (
	API         = "api"
	Provisioner = "provisioner"
	Converger   = "converger"
	Metering    = "metering"
)

// Services lists the services that own a schema, in a fixed order.
func Services() []string { return []string{API, Provisioner, Converger, Metering} }

// Role is the database role of service.
func Role(service string) string { return "convergence_" + service }

// Configure makes every connection of cfg act as service's role: the search path is sent when
// the connection opens, and SET ROLE runs before the pool hands the connection out.
func Configure(cfg *pgxpool.Config, service string) error {
	if !slices.Contains(Services(), service) {
		return fmt.Errorf("no database role for service %q", service)
	}
	// Its own schema alone: it has rights on no other.
	cfg.ConnConfig.RuntimeParams["search_path"] = service
	role := Role(service)
	after := cfg.AfterConnect
	cfg.AfterConnect = func(ctx context.Context, conn *pgx.Conn) error {
		// set_config('role', ...) is SET ROLE with the role as a parameter.
		if _, err := conn.Exec(ctx, `SELECT set_config('role', $1, false)`, role); err != nil {
			return fmt.Errorf("take database role %s (is the database migrated, and the login a member of the role?): %w", role, err)
		}
		if after != nil {
			return after(ctx, conn)
		}
		return nil
	}
	return nil
}
