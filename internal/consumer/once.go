package consumer

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Once applies effect in a transaction that also records (consumer, eventID) in
// processed_events. If that key is already recorded, the effect was committed by an earlier
// delivery: Once rolls back, skips effect, and returns applied=false with no error. A crash
// after the commit and before the ack therefore never doubles the effect on redelivery.
func Once(ctx context.Context, pool *pgxpool.Pool, consumer, eventID string, effect func(pgx.Tx) error) (applied bool, err error) {
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `
			INSERT INTO processed_events (consumer, event_id) VALUES ($1, $2)
			ON CONFLICT DO NOTHING`, consumer, eventID)
		if err != nil {
			return fmt.Errorf("record processed event: %w", err)
		}
		if tag.RowsAffected() == 0 {
			return nil
		}
		applied = true
		return effect(tx)
	})
	if err != nil {
		return false, err
	}
	return applied, nil
}

// Processed reports whether consumer has already committed the effect of eventID. A handler of
// long work (an LLM call, a container start) checks it first so a redelivery does not redo the
// work; Once is still what guarantees the effect is applied once.
func Processed(ctx context.Context, pool *pgxpool.Pool, consumer, eventID string) (bool, error) {
	var done bool
	err := pool.QueryRow(ctx, `
		SELECT EXISTS (SELECT 1 FROM processed_events WHERE consumer = $1 AND event_id = $2)`,
		consumer, eventID).Scan(&done)
	if err != nil {
		return false, fmt.Errorf("check processed event: %w", err)
	}
	return done, nil
}
