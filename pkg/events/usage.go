package events

import (
	"encoding/json"
	"time"
)

// Subjects the metering answers on: core NATS request/reply, served by every metering replica
// in one queue group. The API asks them for the usage endpoints; the answers are what those
// endpoints show.
const (
	SubjectUsageSummary   = "metering.usage.summary"
	SubjectUsageUnpriced  = "metering.usage.unpriced"
	SubjectUsageReconcile = "metering.usage.reconcile"
	SubjectPriceLookup    = "metering.prices.lookup"
)

// PriceQuery (on SubjectPriceLookup) asks what the price table in force charges for a
// provider's model, answered by ModelPrice.
type PriceQuery struct {
	Provider string `json:"provider"`
	Model    string `json:"model,omitempty"`
}

// ModelPrice is a model's price in the table in force, in micro-units of Currency per million
// tokens; Priced false means the table has no price for it, so its usage could not be billed.
type ModelPrice struct {
	Priced                 bool   `json:"priced"`
	Currency               string `json:"currency"`
	PriceVersion           string `json:"priceVersion"`
	InputPerMillionMicros  int64  `json:"inputPerMillionMicros"`
	OutputPerMillionMicros int64  `json:"outputPerMillionMicros"`
	CachedPerMillionMicros int64  `json:"cachedPerMillionMicros"`
}

// UsageQuery (on SubjectUsageSummary) asks for usage over a period, answered by a
// UsageSummary. The metering checks it and answers what is wrong with it.
type UsageQuery struct {
	// From and To are the first and last UTC day, YYYY-MM-DD, both included; empty From is
	// the first day of the current month, empty To today.
	From string `json:"from,omitempty"`
	To   string `json:"to,omitempty"`
	// GroupBy is a comma list of organization, tenant, model, and day or month.
	GroupBy string `json:"groupBy,omitempty"`
	// OrgID and EnvID, when not zero, keep one organization's or one tenant's usage; with
	// EnvID, grouping by organization or tenant is refused.
	OrgID int64 `json:"orgId,omitempty"`
	EnvID int64 `json:"envId,omitempty"`
}

// UsageSummary is the usage a UsageQuery asked for.
type UsageSummary struct {
	From     string       `json:"from"`
	To       string       `json:"to"`
	OrgID    *int64       `json:"orgId,omitempty"`
	EnvID    *int64       `json:"envId,omitempty"`
	GroupBy  []string     `json:"groupBy"`
	Currency string       `json:"currency"`
	Totals   UsageTotals  `json:"totals"`
	Groups   []UsageGroup `json:"groups"`
}

// UsageTotals is the usage of a tenant, an organization, a group or a whole summary. Cost is
// the estimate at list prices of the priced usage, in currency units with six decimals
// (CostMicros in millionths); UnpricedTokens and UnpricedCalls are the usage of models without
// a price, which the cost leaves out.
type UsageTotals struct {
	Calls                   int64    `json:"calls"`
	Tasks                   int64    `json:"tasks"`
	FailedTasks             int64    `json:"failedTasks"`
	InputTokens             int64    `json:"inputTokens"`
	OutputTokens            int64    `json:"outputTokens"`
	CachedTokens            int64    `json:"cachedTokens"`
	TotalTokens             int64    `json:"totalTokens"`
	ContainerSeconds        float64  `json:"containerSeconds"`
	Cost                    string   `json:"cost"`
	CostMicros              int64    `json:"costMicros"`
	UnpricedCalls           int64    `json:"unpricedCalls"`
	UnpricedTokens          int64    `json:"unpricedTokens"`
	AverageConvergenceScore *float64 `json:"averageConvergenceScore"`
}

// UsageGroup is one group's usage. Only the keys of the grouped dimensions are set; model
// groups of container time have an empty provider and model.
type UsageGroup struct {
	OrgID    *int64      `json:"orgId,omitempty"`
	EnvID    *int64      `json:"envId,omitempty"`
	Provider *string     `json:"provider,omitempty"`
	Model    *string     `json:"model,omitempty"`
	Day      string      `json:"day,omitempty"`
	Month    string      `json:"month,omitempty"`
	Usage    UsageTotals `json:"usage"`
}

// UnpricedQuery (on SubjectUsageUnpriced) asks which models have usage without a price.
type UnpricedQuery struct{}

// UnpricedModels answers an UnpricedQuery.
type UnpricedModels struct {
	Models []UnpricedModel `json:"models"`
	// PriceVersion is the price table in force; nil before the metering registered one.
	PriceVersion *PriceVersion `json:"priceVersion,omitempty"`
}

// UnpricedModel is a provider's model that usage arrived for without a price. PricedNow says
// whether the prices in force price it, so a reconciliation repair would price its usage.
type UnpricedModel struct {
	Provider    string    `json:"provider"`
	Model       string    `json:"model"`
	FirstSeenAt time.Time `json:"firstSeenAt"`
	LastSeenAt  time.Time `json:"lastSeenAt"`
	Lines       int64     `json:"lines"`
	Calls       int64     `json:"calls"`
	TotalTokens int64     `json:"totalTokens"`
	PricedNow   bool      `json:"pricedNow"`
}

// PriceVersion names a price table.
type PriceVersion struct {
	ID       int64  `json:"id"`
	Label    string `json:"label"`
	Currency string `json:"currency"`
}

// ReconcileRequest (on SubjectUsageReconcile) asks the metering to compare its ledger with the
// converger's task records over the days From to To (as in UsageQuery), and with Repair to
// write what the ledger lacks.
type ReconcileRequest struct {
	From   string `json:"from,omitempty"`
	To     string `json:"to,omitempty"`
	Repair bool   `json:"repair,omitempty"`
}

// Reconciliation answers a ReconcileRequest: the report as the metering writes it (see the
// README's reconciliation section).
type Reconciliation struct {
	Report json.RawMessage `json:"report"`
}

// Subjects of the budgets' reservations, which the metering keeps: a run's worst-case cost is
// reserved before it is accepted and settles to the ledger's exact cost when its usage is
// recorded.
const (
	SubjectBudgetReserve = "metering.budget.reserve"
	SubjectBudgetRelease = "metering.budget.release"
	SubjectBudgetUsage   = "metering.budget.usage"
	SubjectBudgetStale   = "metering.budget.stale"
)

// ReasonBudgetExceeded is the reason of the refusal of a reservation that does not fit.
const ReasonBudgetExceeded = "budget_exceeded"

// BudgetReservation (on SubjectBudgetReserve) asks to reserve the cost of Tokens tokens of a
// provider's model, at its highest rate, for task TaskID of a tenant, against the monthly
// limits given (nil: none). It is answered by BudgetReserved, or refused with
// ReasonBudgetExceeded saying what remains. Asking again for the same task answers the first
// reservation.
type BudgetReservation struct {
	TaskID            string `json:"taskId"`
	OrgID             int64  `json:"orgId"`
	EnvID             int64  `json:"envId"`
	Provider          string `json:"provider"`
	Model             string `json:"model,omitempty"`
	Tokens            int64  `json:"tokens"`
	OrgLimitMicros    *int64 `json:"orgLimitMicros,omitempty"`
	TenantLimitMicros *int64 `json:"tenantLimitMicros,omitempty"`
}

// BudgetReserved is a reservation made.
type BudgetReserved struct {
	AmountMicros int64  `json:"amountMicros"`
	Currency     string `json:"currency"`
}

// BudgetRelease (on SubjectBudgetRelease) gives back the reservations of tasks (at most
// MaxPage) that were not accepted after all; answered by an empty BudgetReleased.
type BudgetRelease struct {
	TaskIDs []string `json:"taskIds"`
}

// BudgetReleased answers a BudgetRelease.
type BudgetReleased struct{}

// StaleReservationsQuery (on SubjectBudgetStale) asks for the tasks (at most MaxPage, oldest
// first) whose reservations are older than OlderThanSeconds, answered by StaleReservations: the
// API gives back those of tasks it never recorded, or that ended long ago.
type StaleReservationsQuery struct {
	OlderThanSeconds int64 `json:"olderThanSeconds"`
}

// StaleReservations answers a StaleReservationsQuery.
type StaleReservations struct {
	TaskIDs []string `json:"taskIds"`
}

// BudgetUsageQuery (on SubjectBudgetUsage) asks what an organization (EnvID 0) or a tenant has
// spent this UTC month and has reserved, answered by BudgetUsage.
type BudgetUsageQuery struct {
	OrgID int64 `json:"orgId"`
	EnvID int64 `json:"envId,omitempty"`
}

// BudgetUsage is the spend of a BudgetUsageQuery's organization or tenant: the ledger's cost
// this month (Month, YYYY-MM, UTC) and the reservations of the runs not recorded yet.
type BudgetUsage struct {
	Month          string `json:"month"`
	Currency       string `json:"currency"`
	SpentMicros    int64  `json:"spentMicros"`
	ReservedMicros int64  `json:"reservedMicros"`
}

// BudgetThreshold (TypeBudgetThreshold, on BudgetThresholdSubject) says that an organization's
// or a tenant's spend this month crossed one of its budget's alert thresholds: Threshold of
// LimitMicros (a fraction, 1 for the whole limit), with SpentMicros spent when the API saw it.
// Each threshold of a budget is told once a month.
type BudgetThreshold struct {
	OrgID       int64     `json:"orgId"`
	EnvID       int64     `json:"envId,omitempty"`
	Month       string    `json:"month"`
	Threshold   float64   `json:"threshold"`
	LimitMicros int64     `json:"limitMicros"`
	SpentMicros int64     `json:"spentMicros"`
	Currency    string    `json:"currency"`
	At          time.Time `json:"at"`
	// WebhookURL is where a tenant's budget has its alerts delivered (the converger signs and
	// sends them); empty when it names none.
	WebhookURL string `json:"webhookUrl,omitempty"`
}

// UsageRecorded (TypeUsageRecorded, on UsageRecordedSubject) is the usage of one organization
// that one ledger transaction recorded: for each source event (Records), a task's usage (Kind
// task, one line per agent and model) or a tenant's container time (Kind container), each line
// as the ledger holds it, priced (CostMicros, in Currency at PriceVersion) or not (CostMicros
// absent: the price table had no price). The ledger records a source event once, so each ledger
// line is published once.
type UsageRecorded struct {
	OrgID        int64         `json:"orgId"`
	Currency     string        `json:"currency"`
	PriceVersion string        `json:"priceVersion"`
	Records      []UsageRecord `json:"records"`
}

// UsageRecord is what the ledger recorded for one source event.
type UsageRecord struct {
	SourceEventID string      `json:"sourceEventId"`
	Kind          string      `json:"kind"`
	EnvID         int64       `json:"envId"`
	TaskID        string      `json:"taskId,omitempty"`
	OccurredAt    time.Time   `json:"occurredAt"`
	Lines         []UsageLine `json:"lines"`
}

// UsageLine is one line of the ledger.
type UsageLine struct {
	Line         int    `json:"line"`
	Provider     string `json:"provider,omitempty"`
	Model        string `json:"model,omitempty"`
	Agent        string `json:"agent,omitempty"`
	Calls        int64  `json:"calls"`
	InputTokens  int64  `json:"inputTokens"`
	OutputTokens int64  `json:"outputTokens"`
	CachedTokens int64  `json:"cachedTokens"`
	TotalTokens  int64  `json:"totalTokens"`
	ContainerMS  int64  `json:"containerMs"`
	CostMicros   *int64 `json:"costMicros,omitempty"`
}
