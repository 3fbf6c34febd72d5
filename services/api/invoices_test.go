package api_test

import (
	"encoding/csv"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// ledgerLine is a usage line to write into the ledger directly, as the metering records one.
type ledgerLine struct {
	event       string
	envID       int64
	kind        string // task or container
	provider    string
	model       string
	at          time.Time
	input, out  int64
	containerMS int64
	costMicros  *int64
}

func micros(n int64) *int64 { return &n }

// writeLedger records lines for organization orgID in the metering's ledger.
func (a *testAPI) writeLedger(orgID int64, lines ...ledgerLine) {
	a.t.Helper()
	for _, l := range lines {
		_, err := a.Pool.Exec(a.t.Context(), `
			INSERT INTO metering.metering_ledger (event_id, line, kind, env_id, org_id, task_id, occurred_at, provider, model, calls, tasks,
				input_tokens, output_tokens, total_tokens, container_ms, price_version_id, cost_micros)
			VALUES ($1, 0, $2, $3, $4, CASE WHEN $2 = 'task' THEN $1 END, $5, $6, $7, CASE WHEN $2 = 'task' THEN 2 ELSE 0 END,
				CASE WHEN $2 = 'task' THEN 1 ELSE 0 END, $8, $9, $8::bigint + $9::bigint, $10,
				(SELECT max(id) FROM metering.metering_price_versions), $11)`,
			l.event, l.kind, l.envID, orgID, l.at, l.provider, l.model, l.input, l.out, l.containerMS, l.costMicros)
		require.NoError(a.t, err)
	}
}

func TestInvoices_DraftFinalizeReconcileToTheLedger_LateUsageOnTheNextOne(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t)
	a.startMetering()
	orgID, other := a.createOrg("billed", "pro"), a.createOrg("elsewhere", "pro")
	nov := time.Date(2026, 11, 10, 12, 0, 0, 0, time.UTC)
	a.writeLedger(orgID,
		ledgerLine{event: "e1", envID: 7, kind: "task", provider: "openai", model: "gpt-4o-mini", at: nov, input: 1000, out: 500, costMicros: micros(450)},
		ledgerLine{event: "e2", envID: 7, kind: "task", provider: "openai", model: "gpt-4o-mini", at: nov.Add(time.Hour), input: 2000, out: 100, costMicros: micros(360)},
		ledgerLine{event: "e3", envID: 7, kind: "task", provider: "anthropic", model: "claude-sonnet-4-5", at: nov, input: 300, out: 200, costMicros: micros(3_900)},
		ledgerLine{event: "e4", envID: 8, kind: "task", provider: "openai", model: "gpt-4o-mini", at: nov, input: 10, out: 10, costMicros: micros(8)},
		ledgerLine{event: "e5", envID: 8, kind: "container", at: nov, containerMS: 3_600_000, costMicros: micros(36_000)},
		ledgerLine{event: "e6", envID: 7, kind: "task", provider: "openai", model: "gpt-4o-mini", at: nov.AddDate(0, 1, 0), input: 1, out: 1, costMicros: micros(1)},
	)
	a.writeLedger(other, ledgerLine{event: "x1", envID: 9, kind: "task", provider: "openai", model: "gpt-4o-mini", at: nov, input: 5, out: 5, costMicros: micros(99)})
	invoices := fmt.Sprintf("/api/v1/orgs/%d/invoices", orgID)

	code, body := a.do(http.MethodPost, invoices, adminToken, map[string]any{"period": "2026-11"})
	require.Equal(t, http.StatusCreated, code, "%v", body)
	draft := body["invoice"].(map[string]any)
	require.Equal(t, "draft", draft["status"])
	require.Nil(t, draft["number"])
	require.Len(t, draft["lines"], 4, "per tenant and model, and container time")
	var ledger int64
	require.NoError(t, a.Pool.QueryRow(t.Context(), `SELECT sum(cost_micros) FROM metering.metering_ledger
		WHERE org_id = $1 AND occurred_at >= '2026-11-01' AND occurred_at < '2026-12-01'`, orgID).Scan(&ledger))
	require.InDelta(t, ledger, draft["totalMicros"], 0, "the invoice is the ledger's cost to the micro-unit")
	require.Equal(t, "0.040718", draft["total"])
	line := draft["lines"].([]any)[0].(map[string]any)
	require.Equal(t, map[string]any{"envId": 7.0, "kind": "tokens", "provider": "anthropic", "model": "claude-sonnet-4-5", "usagePeriod": "2026-11",
		"adjustment": false, "priceVersion": line["priceVersion"], "calls": 2.0, "tasks": 1.0, "inputTokens": 300.0, "outputTokens": 200.0,
		"cachedTokens": 0.0, "containerSeconds": 0.0, "amountMicros": 3900.0, "amount": "0.003900",
		"description": fmt.Sprintf("tenant 7: claude-sonnet-4-5 (anthropic), 2026-11, prices %s", line["priceVersion"])}, line)

	path := fmt.Sprintf("%s/%d", invoices, int64(draft["invoiceId"].(float64)))
	code, body = a.do(http.MethodPost, path+"/finalize", adminToken, nil)
	require.Equal(t, http.StatusOK, code, "%v", body)
	final := body["invoice"].(map[string]any)
	require.Equal(t, "finalized", final["status"])
	require.InDelta(t, 1, final["number"], 0, "the install's first")
	require.Equal(t, draft["totalMicros"], final["totalMicros"])
	code, body = a.do(http.MethodPost, path+"/finalize", adminToken, nil)
	require.Equal(t, http.StatusOK, code, "%v", body)
	require.Equal(t, final, body["invoice"], "finalizing twice answers the same invoice")

	// Usage recorded late for November: not in November's frozen invoice, but on the next one.
	a.writeLedger(orgID, ledgerLine{event: "late", envID: 8, kind: "task", provider: "openai", model: "gpt-4o-mini", at: nov, input: 50, out: 50, costMicros: micros(70)})
	code, body = a.do(http.MethodGet, path, adminToken, nil)
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, final, body["invoice"], "a finalized invoice never changes")
	code, body = a.do(http.MethodPost, invoices, adminToken, map[string]any{"period": "2026-11"})
	require.Equal(t, http.StatusConflict, code, "%v", body)
	require.Contains(t, errorMessage(body), "is finalized as number 1")
	code, body = a.do(http.MethodPost, invoices, adminToken, map[string]any{"period": "2026-12"})
	require.Equal(t, http.StatusCreated, code, "%v", body)
	dec := body["invoice"].(map[string]any)
	require.InDelta(t, 71, dec["totalMicros"], 0, "December's usage and November's late line")
	var adjustment map[string]any
	for _, l := range dec["lines"].([]any) {
		if l.(map[string]any)["adjustment"] == true {
			adjustment = l.(map[string]any)
		}
	}
	require.NotNil(t, adjustment)
	require.Equal(t, "2026-11", adjustment["usagePeriod"])
	require.InDelta(t, 70, adjustment["amountMicros"], 0)
	code, body = a.do(http.MethodPost, fmt.Sprintf("%s/%d/finalize", invoices, int64(dec["invoiceId"].(float64))), adminToken, nil)
	require.Equal(t, http.StatusConflict, code, "%v", body)
	require.Contains(t, errorMessage(body), "2026-12 has not ended")

	code, body = a.do(http.MethodGet, invoices, adminToken, nil)
	require.Equal(t, http.StatusOK, code, "%v", body)
	require.Len(t, body["invoices"], 2)
	require.Nil(t, body["invoices"].([]any)[0].(map[string]any)["lines"], "a list leaves the lines out")

	// Another organization's invoice is not found; its usage was never on this one.
	code, _ = a.do(http.MethodGet, fmt.Sprintf("/api/v1/orgs/%d/invoices/%d", other, int64(draft["invoiceId"].(float64))), adminToken, nil)
	require.Equal(t, http.StatusNotFound, code)

	entries := a.audit("?action=invoice.finalize")
	require.Len(t, entries, 3)
	require.Equal(t, fmt.Sprintf("invoice %d of organization %d", int64(dec["invoiceId"].(float64)), orgID), entries[0]["target"])
}

func TestInvoices_CSVAndStripe_AddUpToTheTotal(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t)
	a.startMetering()
	orgID := a.createOrg("exported", "pro")
	oct := time.Date(2026, 10, 3, 0, 0, 0, 0, time.UTC)
	a.writeLedger(orgID,
		ledgerLine{event: "c1", envID: 3, kind: "task", provider: "openai", model: "gpt-4o", at: oct, input: 10, out: 10, costMicros: micros(4_999)},
		ledgerLine{event: "c2", envID: 3, kind: "task", provider: "openai", model: "o3", at: oct, input: 10, out: 10, costMicros: micros(4_999)},
		ledgerLine{event: "c3", envID: 4, kind: "container", at: oct, containerMS: 1500, costMicros: micros(15)},
	)
	code, body := a.do(http.MethodPost, fmt.Sprintf("/api/v1/orgs/%d/invoices", orgID), adminToken, map[string]any{"period": "2026-10"})
	require.Equal(t, http.StatusCreated, code, "%v", body)
	path := fmt.Sprintf("/api/v1/orgs/%d/invoices/%d", orgID, int64(body["invoice"].(map[string]any)["invoiceId"].(float64)))

	code, header, answer := a.raw(http.MethodGet, path+"?format=csv", nil)
	require.Equal(t, http.StatusOK, code, "%v", answer)
	require.Equal(t, "text/csv; charset=utf-8", header.Get("Content-Type"))
	records, err := csv.NewReader(strings.NewReader(answer["text"].(string))).ReadAll()
	require.NoError(t, err)
	require.Len(t, records, 5, "a header, three lines, the total")
	require.Equal(t, []string{"", "total", "", "", "2026-10", "", "", "", "", "", "", "", "", "10013", "0.010013", "USD", ""}, records[4])
	require.Equal(t, "1.5", records[3][12], "container seconds")

	code, body = a.do(http.MethodGet, path+"?format=stripe", adminToken, nil)
	require.Equal(t, http.StatusOK, code, "%v", body)
	items := body["data"].([]any)
	var sum float64
	for _, it := range items {
		sum += it.(map[string]any)["amount"].(float64)
	}
	require.InDelta(t, 1, body["totalMinor"], 0, "0.010013 USD is one cent")
	require.InDelta(t, body["totalMinor"], sum, 0, "the items add up to the total in cents: %v", items)
	require.Len(t, items, 4, "each line rounds to 0 or 1 cent (0.4999 → 0); the difference is one more item")
	first := items[0].(map[string]any)
	require.Equal(t, "usd", first["currency"])
	require.Equal(t, map[string]any{"orgId": fmt.Sprint(orgID), "invoiceId": first["metadata"].(map[string]any)["invoiceId"], "period": "2026-10",
		"envId": "3", "usagePeriod": "2026-10", "kind": "tokens", "provider": "openai", "model": "gpt-4o"}, first["metadata"])
	require.Equal(t, map[string]any{"start": float64(oct.AddDate(0, 0, -2).Unix()), "end": float64(oct.AddDate(0, 1, -2).Unix() - 1)}, first["period"])
}

func TestInvoices_BadInput_UnpricedUsageIsNotFinalized(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t)
	a.startMetering()
	orgID := a.createOrg("strict", "pro")
	invoices := fmt.Sprintf("/api/v1/orgs/%d/invoices", orgID)
	for body, want := range map[string]string{
		`{}`:                    "period is required",
		`{"period": "2026-13"}`: `period "2026-13" is not a month: use YYYY-MM`,
		`{"period": "12/2026"}`: `period "12/2026" is not a month`,
		`{"period": "2099-01"}`: "period 2099-01 has not begun",
		`{"period": 202611}`:    "period",
		`{"month": "2026-11"}`:  `unknown field "month"`,
	} {
		code, b := a.doRaw(http.MethodPost, invoices, adminToken, body)
		require.Equal(t, http.StatusBadRequest, code, "%s: %v", body, b)
		require.Contains(t, errorMessage(b), want, body)
	}
	code, _ := a.do(http.MethodPost, "/api/v1/orgs/777/invoices", adminToken, map[string]any{"period": "2026-11"})
	require.Equal(t, http.StatusNotFound, code)
	code, _ = a.do(http.MethodGet, invoices+"/123", adminToken, nil)
	require.Equal(t, http.StatusNotFound, code)
	code, _ = a.do(http.MethodGet, invoices+"/abc", adminToken, nil)
	require.Equal(t, http.StatusNotFound, code)

	a.writeLedger(orgID, ledgerLine{event: "u1", envID: 5, kind: "task", provider: "acme", model: "mystery", at: time.Date(2026, 9, 1, 0, 0, 0, 0, time.UTC), input: 5, out: 5})
	code, body := a.do(http.MethodPost, invoices, adminToken, map[string]any{"period": "2026-09"})
	require.Equal(t, http.StatusCreated, code, "%v", body)
	path := fmt.Sprintf("%s/%d", invoices, int64(body["invoice"].(map[string]any)["invoiceId"].(float64)))
	code, body = a.do(http.MethodGet, path+"?format=xml", adminToken, nil)
	require.Equal(t, http.StatusBadRequest, code)
	require.Contains(t, errorMessage(body), "use json (the default), csv or stripe")
	code, body = a.do(http.MethodPost, path+"/finalize", adminToken, nil)
	require.Equal(t, http.StatusConflict, code, "%v", body)
	require.Contains(t, errorMessage(body), "1 ledger lines of this invoice have no price")
	var marked int
	require.NoError(t, a.Pool.QueryRow(t.Context(), `SELECT count(*) FROM metering.invoice_items`).Scan(&marked))
	require.Zero(t, marked, "a refused finalize marks nothing")
}
