package metering

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/convergence-dev/convergence/internal/natsrpc"
	"github.com/convergence-dev/convergence/pkg/events"
	"github.com/convergence-dev/convergence/services/metering/pricing"
)

// Invoices. An organization's invoice for a month bills its ledger lines of that month, and,
// as adjustments, its lines of earlier months that were recorded after those months' invoices
// were finalized. Each line of the invoice is the usage of one tenant of one model (or its
// container time) at one price version in one month, and its amount is the sum of the ledger's
// costs of that usage, each priced to the nearest micro-unit when it was recorded: the
// invoice's total is the ledger's cost to the micro-unit. A draft is computed from the ledger
// when it is made; finalizing computes it again, marks every ledger line it bills (once: the
// invoice_items key), numbers it from a gapless counter, and freezes it.

// invoiceRows selects the organization's ($1) ledger lines an invoice for the month from $2 to
// $3 bills: not billed yet, of that month, or of an earlier month whose invoice is finalized.
const invoiceRows = `
	FROM metering_ledger l
	WHERE l.org_id = $1 AND l.occurred_at < $3
		AND NOT EXISTS (SELECT 1 FROM invoice_items i WHERE i.event_id = l.event_id AND i.line = l.line)
		AND (l.occurred_at >= $2 OR EXISTS (SELECT 1 FROM invoices f WHERE f.org_id = $1 AND f.status = 'finalized'
			AND f.period = date_trunc('month', l.occurred_at AT TIME ZONE 'UTC')::date))`

// invoiceLines groups ledger lines l (joined as the query that embeds it says) into invoice
// lines.
const invoiceLines = `
	SELECT l.env_id, l.kind = 'container', l.provider, l.model,
		date_trunc('month', l.occurred_at AT TIME ZONE 'UTC')::date, v.label,
		sum(l.calls)::bigint, sum(l.tasks)::bigint, sum(l.input_tokens)::bigint, sum(l.output_tokens)::bigint,
		sum(l.cached_tokens)::bigint, sum(l.container_ms)::bigint, coalesce(sum(l.cost_micros), 0)::bigint,
		count(*) FILTER (WHERE l.cost_micros IS NULL)`

const invoiceGroup = `
	GROUP BY 1, 2, 3, 4, 5, 6 ORDER BY 5, 1, 2, 3, 4, 6`

// collectLines reads invoice lines; unpriced counts the ledger lines without a price.
func collectLines(rows pgx.Rows, period time.Time) (lines []events.InvoiceLine, total pricing.Micros, unpriced int64, err error) {
	var l events.InvoiceLine
	var container bool
	var usage time.Time
	var ms, cost, noPrice int64
	_, err = pgx.ForEachRow(rows, []any{&l.EnvID, &container, &l.Provider, &l.Model, &usage, &l.PriceVersion,
		&l.Calls, &l.Tasks, &l.InputTokens, &l.OutputTokens, &l.CachedTokens, &ms, &cost, &noPrice}, func() error {
		line := l
		line.Kind, line.UsagePeriod, line.Adjustment = "tokens", usage.Format("2006-01"), usage.Before(period)
		what := fmt.Sprintf("%s (%s)", line.Model, line.Provider)
		if container {
			line.Kind, line.Provider, line.Model, what = "container", "", "", "container time"
			line.ContainerSeconds = float64(ms) / 1000
		}
		line.AmountMicros, line.Amount = cost, pricing.Micros(cost).String()
		line.Description = fmt.Sprintf("tenant %d: %s, %s, prices %s", line.EnvID, what, line.UsagePeriod, line.PriceVersion)
		if line.Adjustment {
			line.Description = "adjustment: " + line.Description + ", recorded after that month was invoiced"
		}
		lines = append(lines, line)
		total += pricing.Micros(cost)
		unpriced += noPrice
		return nil
	})
	return lines, total, unpriced, err
}

// parsePeriod reads a month, YYYY-MM, that has begun.
func parsePeriod(s string) (time.Time, error) {
	p, err := time.Parse("2006-01", s)
	if err != nil {
		return p, natsrpc.Errorf(natsrpc.CodeInvalid, "period %q is not a month: use YYYY-MM, such as 2026-12", s)
	}
	if p.After(time.Now().UTC()) {
		return p, natsrpc.Errorf(natsrpc.CodeInvalid, "period %s has not begun", s)
	}
	return p, nil
}

// createInvoice answers an InvoiceCreate: the organization's draft for the month, made from the
// ledger as it stands (again, if there was one).
func (s *Service) createInvoice(ctx context.Context, q events.InvoiceCreate) (events.Invoice, error) {
	period, err := parsePeriod(q.Period)
	if err != nil {
		return events.Invoice{}, err
	}
	if q.OrgID <= 0 {
		return events.Invoice{}, natsrpc.Errorf(natsrpc.CodeInvalid, "orgId is required")
	}
	var id int64
	err = pgx.BeginFunc(ctx, s.deps.Pool, func(tx pgx.Tx) error {
		if err := lockOrgInvoices(ctx, tx, q.OrgID); err != nil {
			return err
		}
		var status string
		var number *int64
		err := tx.QueryRow(ctx, `SELECT id, status, number FROM invoices WHERE org_id = $1 AND period = $2`, q.OrgID, period).Scan(&id, &status, &number)
		if err == nil && status == events.InvoiceFinalized {
			return natsrpc.Errorf(natsrpc.CodeConflict, "organization %d's invoice for %s is finalized as number %d (invoice %d); "+
				"usage recorded for that month since goes onto its next invoice as an adjustment", q.OrgID, q.Period, *number, id)
		}
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("read invoice: %w", err)
		}
		rows, err := tx.Query(ctx, invoiceLines+` FROM (SELECT l.* `+invoiceRows+`) l
			JOIN metering_price_versions v ON v.id = l.price_version_id`+invoiceGroup, q.OrgID, period, period.AddDate(0, 1, 0))
		if err != nil {
			return fmt.Errorf("read ledger: %w", err)
		}
		lines, total, _, err := collectLines(rows, period)
		if err != nil {
			return fmt.Errorf("read ledger: %w", err)
		}
		doc, err := json.Marshal(nonNil(lines))
		if err != nil {
			return err
		}
		return tx.QueryRow(ctx, `
			INSERT INTO invoices (org_id, period, status, currency, total_micros, lines) VALUES ($1, $2, 'draft', $3, $4, $5)
			ON CONFLICT (org_id, period) DO UPDATE SET currency = EXCLUDED.currency, total_micros = EXCLUDED.total_micros,
				lines = EXCLUDED.lines, created_at = now()
			RETURNING id`, q.OrgID, period, s.prices.Load().Currency(), int64(total), doc).Scan(&id)
	})
	if err != nil {
		return events.Invoice{}, err
	}
	return s.invoice(ctx, events.InvoiceRef{OrgID: q.OrgID, InvoiceID: id})
}

func nonNil(lines []events.InvoiceLine) []events.InvoiceLine {
	if lines == nil {
		return []events.InvoiceLine{}
	}
	return lines
}

// lockOrgInvoices takes the organization's invoicing turn for the transaction.
func lockOrgInvoices(ctx context.Context, tx pgx.Tx, orgID int64) error {
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtextextended('invoices', $1))`, orgID); err != nil {
		return fmt.Errorf("take the organization's invoicing turn: %w", err)
	}
	return nil
}

// finalizeInvoice answers an InvoiceRef on SubjectInvoiceFinalize: the invoice, finalized now
// unless it was already (a second finalize answers the same invoice).
func (s *Service) finalizeInvoice(ctx context.Context, q events.InvoiceRef) (events.Invoice, error) {
	err := pgx.BeginFunc(ctx, s.deps.Pool, func(tx pgx.Tx) error {
		if err := lockOrgInvoices(ctx, tx, q.OrgID); err != nil {
			return err
		}
		var period time.Time
		var status string
		err := tx.QueryRow(ctx, `SELECT period, status FROM invoices WHERE id = $1 AND org_id = $2 FOR UPDATE`, q.InvoiceID, q.OrgID).Scan(&period, &status)
		if errors.Is(err, pgx.ErrNoRows) {
			return natsrpc.Errorf(natsrpc.CodeNotFound, "invoice %d of organization %d", q.InvoiceID, q.OrgID)
		}
		if err != nil {
			return fmt.Errorf("read invoice: %w", err)
		}
		if status == events.InvoiceFinalized {
			return nil
		}
		end := period.AddDate(0, 1, 0)
		if time.Now().UTC().Before(end) {
			return natsrpc.Errorf(natsrpc.CodeConflict, "%s has not ended: finalize its invoice from %s on (the draft can be made again until then)",
				period.Format("2006-01"), end.Format("2006-01-02"))
		}
		// The lines billed are marked first, and the invoice's lines computed from the marks, so
		// both are the same ledger lines whatever is recorded meanwhile.
		if _, err := tx.Exec(ctx, `INSERT INTO invoice_items (event_id, line, invoice_id) SELECT l.event_id, l.line, $4 `+invoiceRows,
			q.OrgID, period, end, q.InvoiceID); err != nil {
			return fmt.Errorf("mark the ledger lines billed: %w", err)
		}
		rows, err := tx.Query(ctx, invoiceLines+`
			FROM invoice_items i JOIN metering_ledger l ON l.event_id = i.event_id AND l.line = i.line
			JOIN metering_price_versions v ON v.id = l.price_version_id
			WHERE i.invoice_id = $1`+invoiceGroup, q.InvoiceID)
		if err != nil {
			return fmt.Errorf("read ledger: %w", err)
		}
		lines, total, unpriced, err := collectLines(rows, period)
		if err != nil {
			return fmt.Errorf("read ledger: %w", err)
		}
		if unpriced > 0 {
			return natsrpc.Errorf(natsrpc.CodeConflict, "%d ledger lines of this invoice have no price: price their models "+
				"(GET /api/v1/usage/unpriced, then POST /api/v1/usage/reconcile) and finalize again", unpriced)
		}
		doc, err := json.Marshal(nonNil(lines))
		if err != nil {
			return err
		}
		var number int64
		if err := tx.QueryRow(ctx, `UPDATE invoice_numbers SET last = last + 1 RETURNING last`).Scan(&number); err != nil {
			return fmt.Errorf("number the invoice: %w", err)
		}
		_, err = tx.Exec(ctx, `UPDATE invoices SET status = 'finalized', number = $2, total_micros = $3, lines = $4, finalized_at = now()
			WHERE id = $1`, q.InvoiceID, number, int64(total), doc)
		if err != nil {
			return fmt.Errorf("finalize invoice: %w", err)
		}
		return nil
	})
	if err != nil {
		return events.Invoice{}, err
	}
	return s.invoice(ctx, q)
}

// selectInvoices reads invoices with their lines ($3: false leaves them out).
const selectInvoices = `SELECT id, org_id, to_char(period, 'YYYY-MM'), status, number, currency, total_micros,
	CASE WHEN $3 THEN lines END, created_at, finalized_at FROM invoices`

func scanInvoice(row pgx.Row) (events.Invoice, error) {
	var inv events.Invoice
	var lines []byte
	err := row.Scan(&inv.InvoiceID, &inv.OrgID, &inv.Period, &inv.Status, &inv.Number, &inv.Currency, &inv.TotalMicros,
		&lines, &inv.CreatedAt, &inv.FinalizedAt)
	if err != nil {
		return inv, err
	}
	inv.Total = pricing.Micros(inv.TotalMicros).String()
	if lines != nil {
		err = json.Unmarshal(lines, &inv.Lines)
	}
	return inv, err
}

// invoice answers an InvoiceRef on SubjectInvoiceGet.
func (s *Service) invoice(ctx context.Context, q events.InvoiceRef) (events.Invoice, error) {
	inv, err := scanInvoice(s.deps.Pool.QueryRow(ctx, selectInvoices+` WHERE id = $1 AND org_id = $2`, q.InvoiceID, q.OrgID, true))
	if errors.Is(err, pgx.ErrNoRows) {
		return inv, natsrpc.Errorf(natsrpc.CodeNotFound, "invoice %d of organization %d", q.InvoiceID, q.OrgID)
	}
	return inv, err
}

// listInvoices answers an InvoiceList.
func (s *Service) listInvoices(ctx context.Context, q events.InvoiceList) (events.Invoices, error) {
	if q.Limit <= 0 || q.Limit > events.MaxPage {
		return events.Invoices{}, natsrpc.Errorf(natsrpc.CodeInvalid, "limit %d: use 1 to %d", q.Limit, events.MaxPage)
	}
	rows, err := s.deps.Pool.Query(ctx, selectInvoices+` WHERE org_id = $1 AND ($2 = 0 OR id < $2) ORDER BY id DESC LIMIT $4`,
		q.OrgID, q.AfterID, false, q.Limit)
	if err != nil {
		return events.Invoices{}, fmt.Errorf("list invoices: %w", err)
	}
	list, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (events.Invoice, error) { return scanInvoice(r) })
	if err != nil {
		return events.Invoices{}, fmt.Errorf("list invoices: %w", err)
	}
	return events.Invoices{Invoices: list}, nil
}
