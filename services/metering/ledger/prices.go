package ledger

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/convergence-dev/convergence/internal/pgerr"
	"github.com/convergence-dev/convergence/services/metering/pricing"
)

// Prices is a price table registered as a price version.
type Prices struct {
	VersionID int64
	*pricing.Table
}

// ErrNoPrices means no price version has been registered yet.
var ErrNoPrices = errors.New("no price version registered; start the metering service once, or register a price table")

// RegisterPrices records t as a price version, or finds the version already recorded for the
// same content, marks it the most recently activated, and returns it. It refuses a table whose
// label names other prices, and one in another currency than the versions before it: sums
// over the ledger must be in one currency.
func RegisterPrices(ctx context.Context, db DB, t *pricing.Table) (Prices, error) {
	var id int64
	err := pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		// Replicas start at once and register the same table: one at a time, so the second
		// finds the first's version instead of tripping over its label.
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtext('metering_price_versions'))`); err != nil {
			return fmt.Errorf("lock price versions: %w", err)
		}
		var other string
		err := tx.QueryRow(ctx, `SELECT currency FROM metering_price_versions WHERE currency <> $1 LIMIT 1`, t.Currency()).Scan(&other)
		if err == nil {
			return fmt.Errorf("price version %q is in %s, but the ledger is in %s; amounts in two currencies cannot be added up", t.Label(), t.Currency(), other)
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("check price currency: %w", err)
		}
		err = tx.QueryRow(ctx, `
			INSERT INTO metering_price_versions (label, digest, currency, container_second_micros, document)
			VALUES ($1, $2, $3, $4, $5)
			ON CONFLICT (digest) DO UPDATE SET activated_at = now()
			RETURNING id`,
			t.Label(), t.Digest(), t.Currency(), int64(t.ContainerSecond()), t.Canonical()).Scan(&id)
		if pgerr.IsUniqueViolation(err, "") {
			return fmt.Errorf("price version %q is already registered with other prices; give the changed table a new \"version\"", t.Label())
		}
		if err != nil {
			return fmt.Errorf("register price version %q: %w", t.Label(), err)
		}
		return nil
	})
	if err != nil {
		return Prices{}, err
	}
	return Prices{VersionID: id, Table: t}, nil
}

// CurrentPrices returns the most recently activated price version, or ErrNoPrices.
func CurrentPrices(ctx context.Context, db DB) (Prices, error) {
	var id int64
	var doc []byte
	err := db.QueryRow(ctx, `
		SELECT id, document FROM metering_price_versions
		ORDER BY activated_at DESC, id DESC LIMIT 1`).Scan(&id, &doc)
	if errors.Is(err, pgx.ErrNoRows) {
		return Prices{}, ErrNoPrices
	}
	if err != nil {
		return Prices{}, fmt.Errorf("current price version: %w", err)
	}
	t, err := pricing.Parse(doc)
	if err != nil {
		return Prices{}, fmt.Errorf("price version %d: %w", id, err)
	}
	return Prices{VersionID: id, Table: t}, nil
}
