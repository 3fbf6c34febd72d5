package provisioner

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Installation returns the installation's instance id (runtime.DockerConfig.Instance), kept in
// the provisioner's database: made on the first start, 8 random hex digits, the same for every
// replica and every later start. An installation that already ran tenants before instance ids
// existed gets "", so that its objects keep the names and labels they have.
//
// A database started empty gets a new id, and with it adopts and removes nothing another
// installation made on the same engine, whatever their prefixes.
func Installation(ctx context.Context, pool *pgxpool.Pool) (string, error) {
	var id string
	err := pool.QueryRow(ctx, `SELECT id FROM installation`).Scan(&id)
	if err == nil {
		return id, nil
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return "", fmt.Errorf("read the instance id: %w", err)
	}
	var live bool
	if err := pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM environments WHERE status <> 'destroyed')`).Scan(&live); err != nil {
		return "", fmt.Errorf("read the instance id: %w", err)
	}
	if !live {
		var b [4]byte
		_, _ = rand.Read(b[:]) // crypto/rand.Read never returns an error since Go 1.24.
		id = hex.EncodeToString(b[:])
	}
	// Replicas starting together: the first insert wins, and every one reads the winner.
	if _, err := pool.Exec(ctx, `INSERT INTO installation (id) VALUES ($1) ON CONFLICT DO NOTHING`, id); err != nil {
		return "", fmt.Errorf("keep the instance id: %w", err)
	}
	if err := pool.QueryRow(ctx, `SELECT id FROM installation`).Scan(&id); err != nil {
		return "", fmt.Errorf("read the instance id: %w", err)
	}
	return id, nil
}
