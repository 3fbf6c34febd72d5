package ledger

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// UnpricedModel is a provider and model that usage arrived for without a price, with the
// usage that is still unpriced.
type UnpricedModel struct {
	Provider    string
	Model       string
	FirstSeenAt time.Time
	LastSeenAt  time.Time
	Lines       int64
	Calls       int64
	TotalTokens int64
	// PricedNow says whether the given price table prices the model, so a reconciliation
	// repair would price its usage.
	PricedNow bool
}

// ListUnpriced returns the models with usage still unpriced, most tokens first. prices, when
// its Table is not nil, decides PricedNow.
func ListUnpriced(ctx context.Context, db DB, prices Prices) ([]UnpricedModel, error) {
	rows, err := db.Query(ctx, `
		SELECT provider, model, first_seen_at, last_seen_at, lines, calls, total_tokens
		FROM metering_unpriced_models
		WHERE lines > 0
		ORDER BY total_tokens DESC, provider, model`)
	if err != nil {
		return nil, fmt.Errorf("list unpriced models: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (UnpricedModel, error) {
		var m UnpricedModel
		err := r.Scan(&m.Provider, &m.Model, &m.FirstSeenAt, &m.LastSeenAt, &m.Lines, &m.Calls, &m.TotalTokens)
		if err == nil && prices.Table != nil {
			_, m.PricedNow = prices.Lookup(m.Provider, m.Model)
		}
		return m, err
	})
	if err != nil {
		return nil, fmt.Errorf("list unpriced models: %w", err)
	}
	return out, nil
}

// CountUnpriced returns how many models have usage still unpriced.
func CountUnpriced(ctx context.Context, db DB) (int64, error) {
	var n int64
	if err := db.QueryRow(ctx, `SELECT count(*) FROM metering_unpriced_models WHERE lines > 0`).Scan(&n); err != nil {
		return 0, fmt.Errorf("count unpriced models: %w", err)
	}
	return n, nil
}
