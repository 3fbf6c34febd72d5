package events

import "time"

// Subjects on which the metering makes and answers for invoices, asked by the API's invoice
// endpoints.
const (
	SubjectInvoiceCreate   = "metering.invoice.create"
	SubjectInvoiceFinalize = "metering.invoice.finalize"
	SubjectInvoiceGet      = "metering.invoice.get"
	SubjectInvoiceList     = "metering.invoice.list"
)

// InvoiceCreate (on SubjectInvoiceCreate) makes, or makes again, the draft invoice of an
// organization for Period (YYYY-MM, UTC), answered by the Invoice.
type InvoiceCreate struct {
	OrgID  int64  `json:"orgId"`
	Period string `json:"period"`
}

// InvoiceRef (on SubjectInvoiceFinalize and SubjectInvoiceGet) names an organization's
// invoice, answered by the Invoice; another organization's is not found.
type InvoiceRef struct {
	OrgID     int64 `json:"orgId"`
	InvoiceID int64 `json:"invoiceId"`
}

// InvoiceList (on SubjectInvoiceList) asks for an organization's invoices, newest first, at
// most Limit after invoice AfterID (0: from the start), answered by Invoices.
type InvoiceList struct {
	OrgID   int64 `json:"orgId"`
	AfterID int64 `json:"afterId,omitempty"`
	Limit   int   `json:"limit"`
}

// Invoices is a page of invoices, without their lines.
type Invoices struct {
	Invoices []Invoice `json:"invoices"`
}

// Invoice is an organization's invoice for a month. Status is draft or finalized; a finalized
// one has its Number, sequential per install, and never changes. Amounts are integer
// micro-units of Currency (TotalMicros) and decimal strings (Total); the total is the sum of
// the lines' amounts, each the sum of the ledger's costs of its usage.
type Invoice struct {
	InvoiceID   int64         `json:"invoiceId"`
	OrgID       int64         `json:"orgId"`
	Period      string        `json:"period"`
	Status      string        `json:"status"`
	Number      *int64        `json:"number"`
	Currency    string        `json:"currency"`
	TotalMicros int64         `json:"totalMicros"`
	Total       string        `json:"total"`
	Lines       []InvoiceLine `json:"lines,omitempty"`
	CreatedAt   time.Time     `json:"createdAt"`
	FinalizedAt *time.Time    `json:"finalizedAt"`
}

// The invoice statuses.
const (
	InvoiceDraft     = "draft"
	InvoiceFinalized = "finalized"
)

// InvoiceLine is the usage of one tenant of one kind (tokens of a provider's model, or
// container time) at one price version, in one month: the invoice's own (UsagePeriod equal to
// its Period), or an earlier one whose usage was recorded after that month was invoiced
// (Adjustment).
type InvoiceLine struct {
	EnvID            int64   `json:"envId"`
	Kind             string  `json:"kind"` // tokens or container
	Provider         string  `json:"provider,omitempty"`
	Model            string  `json:"model,omitempty"`
	UsagePeriod      string  `json:"usagePeriod"`
	Adjustment       bool    `json:"adjustment"`
	PriceVersion     string  `json:"priceVersion"`
	Calls            int64   `json:"calls"`
	Tasks            int64   `json:"tasks"`
	InputTokens      int64   `json:"inputTokens"`
	OutputTokens     int64   `json:"outputTokens"`
	CachedTokens     int64   `json:"cachedTokens"`
	ContainerSeconds float64 `json:"containerSeconds"`
	AmountMicros     int64   `json:"amountMicros"`
	Amount           string  `json:"amount"`
	Description      string  `json:"description"`
}
