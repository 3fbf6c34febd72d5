// Package ports leases tenant host ports from the pool in the tenant_ports table: the lowest
// free port, each to one tenant, with the database's unique keys as the guarantee. The API
// leases a port in the transaction that creates a tenant; the provisioner probes it before a
// container publishes it, moves the tenant to another port when something else holds it, and
// releases it once the tenant's container is confirmed gone.
package ports

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// ErrNoFreePort means every port of the pool is leased (or quarantined).
var ErrNoFreePort = errors.New("no free tenant port")

// DB is what leasing needs of a database handle; a pool, a connection and a transaction all
// have it.
type DB interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Lease leases the lowest free port to envID and records it on the tenant's row, inside the
// caller's transaction; the lease becomes visible when it commits. Concurrent leases skip
// each other's rows instead of waiting on them, so parallel spawns get distinct ports without
// queueing. A tenant that already holds a port gets it again. It wraps [ErrNoFreePort] when
// none is left.
func Lease(ctx context.Context, tx DB, envID int64) (int, error) {
	var port int
	err := tx.QueryRow(ctx, `SELECT port FROM tenant_ports WHERE env_id = $1`, envID).Scan(&port)
	switch {
	case err == nil:
		return port, nil
	case !errors.Is(err, pgx.ErrNoRows):
		return 0, fmt.Errorf("read port lease: %w", err)
	}
	err = tx.QueryRow(ctx, `
		UPDATE tenant_ports SET env_id = $1, leased_at = now()
		WHERE port = (
			SELECT port FROM tenant_ports
			WHERE env_id IS NULL AND (unavailable_until IS NULL OR unavailable_until <= now())
			ORDER BY port LIMIT 1
			FOR UPDATE SKIP LOCKED)
		RETURNING port`, envID).Scan(&port)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, ErrNoFreePort
	}
	if err != nil {
		return 0, fmt.Errorf("lease port: %w", err)
	}
	if _, err := tx.Exec(ctx, `UPDATE environments SET port = $2, updated_at = now() WHERE id = $1`, envID, port); err != nil {
		return 0, fmt.Errorf("record port: %w", err)
	}
	return port, nil
}

// Release frees envID's port, if it holds one, and clears it from the tenant's row. Call it
// only once the tenant's container is confirmed gone. It is idempotent.
func Release(ctx context.Context, tx DB, envID int64) error {
	if _, err := tx.Exec(ctx, `UPDATE tenant_ports SET env_id = NULL, leased_at = NULL WHERE env_id = $1`, envID); err != nil {
		return fmt.Errorf("release port: %w", err)
	}
	if _, err := tx.Exec(ctx, `UPDATE environments SET port = NULL, updated_at = now() WHERE id = $1 AND port IS NOT NULL`, envID); err != nil {
		return fmt.Errorf("clear port: %w", err)
	}
	return nil
}

// Move gives envID another port because something outside the platform holds its current
// one: the old port is released and skipped by every lease for quarantine, and the lowest
// other free port is leased. It returns the new port.
func Move(ctx context.Context, tx DB, envID int64, quarantine time.Duration) (int, error) {
	if _, err := tx.Exec(ctx, `
		UPDATE tenant_ports SET env_id = NULL, leased_at = NULL, unavailable_until = now() + $2::interval
		WHERE env_id = $1`, envID, quarantine); err != nil {
		return 0, fmt.Errorf("quarantine port: %w", err)
	}
	return Lease(ctx, tx, envID)
}

// Sync makes the pool hold exactly the ports first to last: missing ones are added, free ones
// outside the range dropped. Leased ports outside the range stay until their tenants release
// them. It returns how many ports the pool has free.
func Sync(ctx context.Context, db DB, first, last int) (free int, err error) {
	if _, err := db.Exec(ctx, `
		INSERT INTO tenant_ports (port) SELECT generate_series($1::int, $2::int)
		ON CONFLICT (port) DO NOTHING`, first, last); err != nil {
		return 0, fmt.Errorf("add ports to pool: %w", err)
	}
	if _, err := db.Exec(ctx, `
		DELETE FROM tenant_ports WHERE env_id IS NULL AND (port < $1 OR port > $2)`, first, last); err != nil {
		return 0, fmt.Errorf("drop ports from pool: %w", err)
	}
	if err := db.QueryRow(ctx, `SELECT count(*) FROM tenant_ports WHERE env_id IS NULL`).Scan(&free); err != nil {
		return 0, fmt.Errorf("count free ports: %w", err)
	}
	return free, nil
}

// Probe reports whether port can be bound on hostIP right now, by binding it and letting it go.
// It returns an error saying what holds it otherwise. A port the caller's own container
// already publishes is of course held: probe only before a container is created.
func Probe(ctx context.Context, hostIP string, port int) error {
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", net.JoinHostPort(hostIP, strconv.Itoa(port)))
	if err != nil {
		return fmt.Errorf("port %d on %s is in use: %w", port, hostIP, err)
	}
	return ln.Close()
}
