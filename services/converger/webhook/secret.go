package webhook

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/convergence-dev/convergence/internal/seal"
)

// DB is what the package needs of a database: a *pgxpool.Pool or a pgx.Tx.
type DB interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// secretPrefix starts every secret, as Standard Webhooks secrets do.
const secretPrefix = "whsec_"

// RotationGrace is how long the previous secret keeps signing after a rotation.
const RotationGrace = 24 * time.Hour

// Secret is a tenant's webhook signing secret.
type Secret struct {
	// Current signs every delivery.
	Current string `json:"secret"`
	// Previous also signs deliveries until PreviousExpiresAt, after a rotation.
	Previous          string     `json:"previousSecret,omitempty"`
	PreviousExpiresAt *time.Time `json:"previousExpiresAt,omitempty"`
	CreatedAt         time.Time  `json:"createdAt"`
	RotatedAt         time.Time  `json:"rotatedAt"`
}

// signing returns the secrets that sign a delivery at now.
func (s Secret) signing(now time.Time) []string {
	if s.Previous != "" && s.PreviousExpiresAt != nil && now.Before(*s.PreviousExpiresAt) {
		return []string{s.Current, s.Previous}
	}
	return []string{s.Current}
}

// NewSecret returns a new random secret.
func NewSecret() string {
	var b [32]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never returns an error since Go 1.24.
	return secretPrefix + base64.StdEncoding.EncodeToString(b[:])
}

// Secrets reads and writes tenants' signing secrets, which the database holds sealed
// (internal/seal) under the keyring's keys, each bound to its tenant.
type Secrets struct {
	keys *seal.Keyring
}

// NewSecrets returns the secrets of a converger whose keyring is keys.
func NewSecrets(keys *seal.Keyring) *Secrets { return &Secrets{keys: keys} }

// sealContext binds a tenant's sealed secrets to the tenant: a value copied to another
// tenant's row does not open.
func sealContext(envID int64) string { return "webhook-secret/" + strconv.FormatInt(envID, 10) }

// Ensure returns the tenant's secret, creating it first if it has none. It is idempotent and
// safe to call concurrently.
func (s *Secrets) Ensure(ctx context.Context, db DB, envID int64) (Secret, error) {
	if _, err := db.Exec(ctx, createSigningKey, envID, s.keys.Seal(NewSecret(), sealContext(envID))); err != nil {
		return Secret{}, fmt.Errorf("create webhook secret: %w", err)
	}
	return s.load(ctx, db, envID)
}

// Queue queues on b the creation of the tenant's secret if it has none, for a caller that
// writes in one round trip.
func (s *Secrets) Queue(b *pgx.Batch, envID int64) {
	b.Queue(createSigningKey, envID, s.keys.Seal(NewSecret(), sealContext(envID)))
}

const createSigningKey = `INSERT INTO webhook_secrets (env_id, secret) VALUES ($1, $2) ON CONFLICT (env_id) DO NOTHING`

// Rotate replaces the tenant's secret with a new one and returns it. The replaced secret keeps
// signing beside the new one for grace; a tenant without a secret gets its first.
func (s *Secrets) Rotate(ctx context.Context, db DB, envID int64, grace time.Duration) (Secret, error) {
	_, err := db.Exec(ctx, `
		INSERT INTO webhook_secrets (env_id, secret) VALUES ($1, $2)
		ON CONFLICT (env_id) DO UPDATE SET
			previous_secret = webhook_secrets.secret,
			previous_expires_at = now() + $3::interval,
			secret = EXCLUDED.secret,
			rotated_at = now()`, envID, s.keys.Seal(NewSecret(), sealContext(envID)), grace)
	if err != nil {
		return Secret{}, fmt.Errorf("rotate webhook secret: %w", err)
	}
	return s.load(ctx, db, envID)
}

// Reseal seals again, under the keyring's first key, every secret sealed under another key or
// stored before sealing, and returns how many rows it changed. Run after putting a new key
// first in the keyring; the old key may then be dropped.
func (s *Secrets) Reseal(ctx context.Context, db DB) (int, error) {
	rows, err := db.Query(ctx, `SELECT env_id, secret, previous_secret FROM webhook_secrets`)
	if err != nil {
		return 0, fmt.Errorf("read webhook secrets: %w", err)
	}
	type row struct {
		envID          int64
		secret, before string
		previous       *string
	}
	var stale []row
	for rows.Next() {
		var r row
		if err := rows.Scan(&r.envID, &r.secret, &r.previous); err != nil {
			rows.Close()
			return 0, fmt.Errorf("read webhook secrets: %w", err)
		}
		if s.keys.NeedsReseal(r.secret) || (r.previous != nil && s.keys.NeedsReseal(*r.previous)) {
			r.before = r.secret
			stale = append(stale, r)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("read webhook secrets: %w", err)
	}
	changed := 0
	for _, r := range stale {
		c := sealContext(r.envID)
		current, err := s.keys.Open(r.secret, c)
		if err != nil {
			return changed, fmt.Errorf("open webhook secret of tenant %d: %w", r.envID, err)
		}
		var previous *string
		if r.previous != nil {
			p, err := s.keys.Open(*r.previous, c)
			if err != nil {
				return changed, fmt.Errorf("open previous webhook secret of tenant %d: %w", r.envID, err)
			}
			sealed := s.keys.Seal(p, c)
			previous = &sealed
		}
		// Only if no rotation came in between: that one sealed under the current key already.
		tag, err := db.Exec(ctx, `UPDATE webhook_secrets SET secret = $2, previous_secret = $3 WHERE env_id = $1 AND secret = $4`,
			r.envID, s.keys.Seal(current, c), previous, r.before)
		if err != nil {
			return changed, fmt.Errorf("reseal webhook secret of tenant %d: %w", r.envID, err)
		}
		changed += int(tag.RowsAffected())
	}
	return changed, nil
}

// errNoSecret is returned when a tenant has no secret.
var errNoSecret = errors.New("tenant has no webhook secret")

func (s *Secrets) load(ctx context.Context, db DB, envID int64) (Secret, error) {
	var sec Secret
	var sealed string
	var prev *string
	err := db.QueryRow(ctx, `
		SELECT secret, previous_secret, previous_expires_at, created_at, rotated_at
		FROM webhook_secrets WHERE env_id = $1`, envID).Scan(&sealed, &prev, &sec.PreviousExpiresAt, &sec.CreatedAt, &sec.RotatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return Secret{}, errNoSecret
	}
	if err != nil {
		return Secret{}, fmt.Errorf("read webhook secret: %w", err)
	}
	if sec.Current, err = s.keys.Open(sealed, sealContext(envID)); err != nil {
		return Secret{}, fmt.Errorf("open webhook secret of tenant %d: %w", envID, err)
	}
	if prev != nil {
		if sec.Previous, err = s.keys.Open(*prev, sealContext(envID)); err != nil {
			return Secret{}, fmt.Errorf("open previous webhook secret of tenant %d: %w", envID, err)
		}
	}
	return sec, nil
}
