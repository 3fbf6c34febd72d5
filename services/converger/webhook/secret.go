package webhook

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
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

// EnsureSecret returns the tenant's secret, creating it first if it has none. It is
// idempotent and safe to call concurrently.
func EnsureSecret(ctx context.Context, db DB, envID int64) (Secret, error) {
	if _, err := db.Exec(ctx, createSigningKey, envID, NewSecret()); err != nil {
		return Secret{}, fmt.Errorf("create webhook secret: %w", err)
	}
	return loadSecret(ctx, db, envID)
}

// QueueSecret queues on b the creation of the tenant's secret if it has none, for a caller
// that writes in one round trip.
func QueueSecret(b *pgx.Batch, envID int64) {
	b.Queue(createSigningKey, envID, NewSecret())
}

const createSigningKey = `INSERT INTO webhook_secrets (env_id, secret) VALUES ($1, $2) ON CONFLICT (env_id) DO NOTHING`

// Rotate replaces the tenant's secret with a new one and returns it. The replaced secret keeps
// signing beside the new one for grace; a tenant without a secret gets its first.
func Rotate(ctx context.Context, db DB, envID int64, grace time.Duration) (Secret, error) {
	_, err := db.Exec(ctx, `
		INSERT INTO webhook_secrets (env_id, secret) VALUES ($1, $2)
		ON CONFLICT (env_id) DO UPDATE SET
			previous_secret = webhook_secrets.secret,
			previous_expires_at = now() + $3::interval,
			secret = EXCLUDED.secret,
			rotated_at = now()`, envID, NewSecret(), grace)
	if err != nil {
		return Secret{}, fmt.Errorf("rotate webhook secret: %w", err)
	}
	return loadSecret(ctx, db, envID)
}

// errNoSecret is returned when a tenant has no secret.
var errNoSecret = errors.New("tenant has no webhook secret")

func loadSecret(ctx context.Context, db DB, envID int64) (Secret, error) {
	var s Secret
	var prev *string
	err := db.QueryRow(ctx, `
		SELECT secret, previous_secret, previous_expires_at, created_at, rotated_at
		FROM webhook_secrets WHERE env_id = $1`, envID).Scan(&s.Current, &prev, &s.PreviousExpiresAt, &s.CreatedAt, &s.RotatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return Secret{}, errNoSecret
	}
	if err != nil {
		return Secret{}, fmt.Errorf("read webhook secret: %w", err)
	}
	if prev != nil {
		s.Previous = *prev
	}
	return s, nil
}
