package provisioner

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

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
//
// The id is also kept in stateDir (the file instance, unless stateDir is ""), where operators
// and tools find it; a state dir that holds another installation's id is refused, since the
// two would disagree on which tenants and firewall rules are whose.
func Installation(ctx context.Context, pool *pgxpool.Pool, stateDir string) (string, error) {
	id, err := installationID(ctx, pool)
	if err != nil || stateDir == "" {
		return id, err
	}
	file := filepath.Join(stateDir, InstanceFile)
	kept, err := os.ReadFile(file)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := os.MkdirAll(stateDir, 0o700); err != nil {
			return "", fmt.Errorf("keep the instance id: %w", err)
		}
		if err := os.WriteFile(file, []byte(id+"\n"), 0o600); err != nil {
			return "", fmt.Errorf("keep the instance id: %w", err)
		}
		return id, nil
	case err != nil:
		return "", fmt.Errorf("read the instance id: %w", err)
	}
	if got := strings.TrimSpace(string(kept)); got != id {
		return "", fmt.Errorf("the state dir %s belongs to installation %q, the database to %q: give the provisioner the state dir and database of one installation", stateDir, got, id)
	}
	return id, nil
}

// InstanceFile is the file of the state dir that holds the instance id.
const InstanceFile = "instance"

// installationID reads the instance id from the database, making it on the first start.
func installationID(ctx context.Context, pool *pgxpool.Pool) (string, error) {
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
