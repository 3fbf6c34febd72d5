package api

import (
	"encoding/csv"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/convergence-dev/convergence/internal/httpx"
	"github.com/convergence-dev/convergence/internal/natsrpc"
	contract "github.com/convergence-dev/convergence/pkg/api"
	"github.com/convergence-dev/convergence/pkg/events"
)

// invoiceRoutes registers the operators' invoice endpoints; the metering makes and keeps the
// invoices (metering/invoices.go):
//
//	POST /api/v1/orgs/:orgId/invoices                       {"period": "2026-12"}: the month's draft, made (again) from the ledger
//	GET  /api/v1/orgs/:orgId/invoices?limit=&cursor=        newest first, without lines
//	GET  /api/v1/orgs/:orgId/invoices/:invoiceId?format=    json (default), csv, or stripe
//	POST /api/v1/orgs/:orgId/invoices/:invoiceId/finalize   number and freeze it
func (s *Service) invoiceRoutes(admin *echo.Group) {
	admin.POST("/orgs/:orgId/invoices", s.createInvoice, s.audited(auditInvoiceCreate), s.idempotent)
	admin.GET("/orgs/:orgId/invoices", s.listInvoices)
	admin.GET("/orgs/:orgId/invoices/:invoiceId", s.getInvoice)
	admin.POST("/orgs/:orgId/invoices/:invoiceId/finalize", s.finalizeInvoice, s.audited(auditInvoiceFinalize))
}

// invoicesOf is what the metering's invoice answers are about, for the 503 when it does not answer.
const invoicesOf = "the metering, which keeps the invoices,"

// existingOrg reads the :orgId of the path, and answers 404 for an organization that does not
// exist.
func (s *Service) existingOrg(c echo.Context) (int64, error) {
	id, err := orgIDParam(c)
	if err != nil {
		return 0, err
	}
	_, _, err = s.orgOf(c.Request().Context(), id)
	return id, err
}

func (s *Service) createInvoice(c echo.Context) error {
	orgID, err := s.existingOrg(c)
	if err != nil {
		return err
	}
	var req contract.CreateInvoiceJSONBody
	if err := decodeBody(c, &req); err != nil {
		return err
	}
	if req.Period == "" {
		return httpx.BadRequest(`period is required: the month to invoice, YYYY-MM, such as {"period": "2026-12"}`)
	}
	inv, err := natsrpc.Call[events.InvoiceCreate, events.Invoice](c.Request().Context(), s.deps.NC, events.SubjectInvoiceCreate,
		events.InvoiceCreate{OrgID: orgID, Period: req.Period})
	if err != nil {
		return fromService(err, invoicesOf)
	}
	noteAudit(c, auditFacts{OrgID: orgID, Target: invoiceName(inv.InvoiceID, orgID)})
	return c.JSON(http.StatusCreated, contract.InvoiceAnswer{Success: true, Invoice: invoiceView(inv)})
}

func invoiceName(id, orgID int64) string {
	return fmt.Sprintf("invoice %d of organization %d", id, orgID)
}

// invoiceRef reads the :orgId and :invoiceId of the path.
func (s *Service) invoiceRef(c echo.Context) (events.InvoiceRef, error) {
	orgID, err := orgIDParam(c)
	if err != nil {
		return events.InvoiceRef{}, err
	}
	raw := c.Param("invoiceId")
	id, err := strconv.ParseInt(raw, 10, 64)
	if err != nil || id <= 0 {
		return events.InvoiceRef{}, httpx.NotFound(fmt.Sprintf("invoice %s", truncate(raw, 64)))
	}
	return events.InvoiceRef{OrgID: orgID, InvoiceID: id}, nil
}

func (s *Service) finalizeInvoice(c echo.Context) error {
	ref, err := s.invoiceRef(c)
	if err != nil {
		return err
	}
	noteAudit(c, auditFacts{OrgID: ref.OrgID, Target: invoiceName(ref.InvoiceID, ref.OrgID)})
	inv, err := natsrpc.Call[events.InvoiceRef, events.Invoice](c.Request().Context(), s.deps.NC, events.SubjectInvoiceFinalize, ref)
	if err != nil {
		return fromService(err, invoicesOf)
	}
	return c.JSON(http.StatusOK, contract.InvoiceAnswer{Success: true, Invoice: invoiceView(inv)})
}

func (s *Service) listInvoices(c echo.Context) error {
	orgID, err := s.existingOrg(c)
	if err != nil {
		return err
	}
	limit, after, err := pageParams(c)
	if err != nil {
		return err
	}
	list, err := natsrpc.Call[events.InvoiceList, events.Invoices](c.Request().Context(), s.deps.NC, events.SubjectInvoiceList,
		events.InvoiceList{OrgID: orgID, AfterID: after, Limit: limit + 1})
	if err != nil {
		return fromService(err, invoicesOf)
	}
	invoices, next := pageOf(list.Invoices, limit, func(inv events.Invoice) int64 { return inv.InvoiceID })
	views := make([]contract.Invoice, len(invoices))
	for i, inv := range invoices {
		views[i] = invoiceView(inv)
	}
	return c.JSON(http.StatusOK, contract.InvoiceList{Success: true, Invoices: views, NextCursor: next})
}

func (s *Service) getInvoice(c echo.Context) error {
	ref, err := s.invoiceRef(c)
	if err != nil {
		return err
	}
	format := c.QueryParam("format")
	if !slices.Contains([]string{"", "json", "csv", "stripe"}, format) {
		return httpx.BadRequest("format %q is not valid: use json (the default), csv or stripe", format)
	}
	inv, err := natsrpc.Call[events.InvoiceRef, events.Invoice](c.Request().Context(), s.deps.NC, events.SubjectInvoiceGet, ref)
	if err != nil {
		return fromService(err, invoicesOf)
	}
	switch format {
	case "csv":
		return invoiceCSV(c, inv)
	case "stripe":
		return c.JSON(http.StatusOK, stripeItems(inv))
	}
	return c.JSON(http.StatusOK, contract.InvoiceAnswer{Success: true, Invoice: invoiceView(inv)})
}

// invoiceCSV writes the invoice's lines as CSV, one line a row, and its total last.
// invoiceView is the metering's invoice as the API shows it.
func invoiceView(inv events.Invoice) contract.Invoice {
	v := contract.Invoice{
		InvoiceID: inv.InvoiceID, OrgID: inv.OrgID, Period: inv.Period, Status: contract.InvoiceStatus(inv.Status), Number: inv.Number,
		Currency: inv.Currency, TotalMicros: inv.TotalMicros, Total: inv.Total, CreatedAt: inv.CreatedAt, FinalizedAt: inv.FinalizedAt,
	}
	for _, l := range inv.Lines {
		v.Lines = append(v.Lines, contract.InvoiceLine{
			EnvID: l.EnvID, Kind: contract.InvoiceLineKind(l.Kind), Provider: l.Provider, Model: l.Model, UsagePeriod: l.UsagePeriod,
			Adjustment: l.Adjustment, PriceVersion: l.PriceVersion, Calls: l.Calls, Tasks: l.Tasks, InputTokens: l.InputTokens,
			OutputTokens: l.OutputTokens, CachedTokens: l.CachedTokens, ContainerSeconds: l.ContainerSeconds,
			AmountMicros: l.AmountMicros, Amount: l.Amount, Description: l.Description,
		})
	}
	return v
}

func invoiceCSV(c echo.Context, inv events.Invoice) error {
	h := c.Response().Header()
	h.Set(echo.HeaderContentType, "text/csv; charset=utf-8")
	h.Set(echo.HeaderContentDisposition, fmt.Sprintf(`attachment; filename="invoice-%d-%s.csv"`, inv.OrgID, inv.Period))
	c.Response().WriteHeader(http.StatusOK)
	w := csv.NewWriter(c.Response())
	_ = w.Write([]string{"envId", "kind", "provider", "model", "usagePeriod", "adjustment", "priceVersion", "calls", "tasks",
		"inputTokens", "outputTokens", "cachedTokens", "containerSeconds", "amountMicros", "amount", "currency", "description"})
	for _, l := range inv.Lines {
		_ = w.Write([]string{strconv.FormatInt(l.EnvID, 10), l.Kind, l.Provider, l.Model, l.UsagePeriod, strconv.FormatBool(l.Adjustment),
			l.PriceVersion, strconv.FormatInt(l.Calls, 10), strconv.FormatInt(l.Tasks, 10), strconv.FormatInt(l.InputTokens, 10),
			strconv.FormatInt(l.OutputTokens, 10), strconv.FormatInt(l.CachedTokens, 10), strconv.FormatFloat(l.ContainerSeconds, 'f', -1, 64),
			strconv.FormatInt(l.AmountMicros, 10), l.Amount, inv.Currency, l.Description})
	}
	_ = w.Write([]string{"", "total", "", "", inv.Period, "", "", "", "", "", "", "", "", strconv.FormatInt(inv.TotalMicros, 10), inv.Total, inv.Currency, ""})
	w.Flush()
	return w.Error()
}

// stripeItem is an invoice item as Stripe's create-invoice-item API takes it, less the
// customer, which the operator maps from the organization (metadata.orgId).
type stripeItem struct {
	Amount      int64             `json:"amount"`
	Currency    string            `json:"currency"`
	Description string            `json:"description"`
	Period      stripePeriod      `json:"period"`
	Metadata    map[string]string `json:"metadata"`
}

type stripePeriod struct {
	Start int64 `json:"start"`
	End   int64 `json:"end"`
}

// zeroDecimal are the currencies Stripe counts in whole units; the others in hundredths.
var zeroDecimal = []string{"BIF", "CLP", "DJF", "GNF", "JPY", "KMF", "KRW", "MGA", "PYG", "RWF", "UGX", "VND", "VUV", "XAF", "XOF", "XPF"}

// stripeItems is the invoice as Stripe invoice items: each line's amount in the currency's
// minor unit, rounded half away from zero, and, when those roundings do not add up to the
// total rounded the same way, one more item of the difference, so the items' sum is the
// invoice's total in the minor unit. Nothing is sent from here.
func stripeItems(inv events.Invoice) map[string]any {
	perMinor := int64(10_000) // micro-units in a cent
	if slices.Contains(zeroDecimal, strings.ToUpper(inv.Currency)) {
		perMinor = 1_000_000
	}
	minor := func(micros int64) int64 {
		q, r := micros/perMinor, micros%perMinor
		if 2*abs(r) >= perMinor {
			q += sign(micros)
		}
		return q
	}
	items := []stripeItem{}
	var sum int64
	meta := func(l events.InvoiceLine) map[string]string {
		m := map[string]string{"orgId": strconv.FormatInt(inv.OrgID, 10), "invoiceId": strconv.FormatInt(inv.InvoiceID, 10), "period": inv.Period}
		if inv.Number != nil {
			m["invoiceNumber"] = strconv.FormatInt(*inv.Number, 10)
		}
		if l.EnvID != 0 {
			m["envId"], m["usagePeriod"], m["kind"] = strconv.FormatInt(l.EnvID, 10), l.UsagePeriod, l.Kind
		}
		if l.Model != "" {
			m["provider"], m["model"] = l.Provider, l.Model
		}
		return m
	}
	for _, l := range inv.Lines {
		start, _ := time.Parse("2006-01", l.UsagePeriod)
		items = append(items, stripeItem{Amount: minor(l.AmountMicros), Currency: strings.ToLower(inv.Currency), Description: l.Description,
			Period: stripePeriod{Start: start.Unix(), End: start.AddDate(0, 1, 0).Unix() - 1}, Metadata: meta(l)})
		sum += minor(l.AmountMicros)
	}
	if diff := minor(inv.TotalMicros) - sum; diff != 0 {
		start, _ := time.Parse("2006-01", inv.Period)
		items = append(items, stripeItem{Amount: diff, Currency: strings.ToLower(inv.Currency), Description: "rounding of the lines to the currency's minor unit",
			Period: stripePeriod{Start: start.Unix(), End: start.AddDate(0, 1, 0).Unix() - 1}, Metadata: meta(events.InvoiceLine{})})
	}
	return map[string]any{"object": "list", "data": items, "totalMinor": minor(inv.TotalMicros)}
}

func abs(n int64) int64 {
	if n < 0 {
		return -n
	}
	return n
}

func sign(n int64) int64 {
	if n < 0 {
		return -1
	}
	return 1
}
