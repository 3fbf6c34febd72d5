package events

import (
	"fmt"
	"strconv"
)

// Subjects of commands (work-queue streams) and facts (kept for replay).
const (
	SubjectTenantSpawn       = "tenant.spawn"
	SubjectTenantDestroy     = "tenant.destroy"
	SubjectTenantLifecycle   = "tenant.lifecycle.>" // tenant.lifecycle.<state>.<envId>
	SubjectConvergeRequest   = "converge.request"
	SubjectConvergeCompleted = "converge.completed"
	SubjectConvergeFailed    = "converge.failed"
	SubjectConvergeProgress  = "converge.progress.>" // converge.progress.<taskId>, core NATS
	SubjectDeadLetter        = "deadletter.>"        // deadletter.<consumer>
	SubjectTenantKeys        = "tenant.key.>"        // tenant.key.issued.<envId>
	SubjectConvergeCancel    = "converge.cancel.*"   // converge.cancel.<taskId>, core NATS, between convergers
	SubjectBudgetThreshold   = "budget.threshold.>"  // budget.threshold.<orgId>.<envId>, envId 0 for an organization's
	SubjectUsageRecorded     = "usage.recorded.>"    // usage.recorded.<orgId>
)

// Event types: reverse-DNS names with the payload version last.
const (
	TypeTenantSpawn       = "dev.convergence.tenant.spawn.v1"
	TypeTenantDestroy     = "dev.convergence.tenant.destroy.v1"
	TypeTenantLifecycle   = "dev.convergence.tenant.lifecycle.v1"
	TypeConvergeRequest   = "dev.convergence.converge.request.v1"
	TypeConvergeCompleted = "dev.convergence.converge.completed.v1"
	TypeConvergeFailed    = "dev.convergence.converge.failed.v1"
	TypeConvergeProgress  = "dev.convergence.converge.progress.v1"
	TypeTenantKeyIssued   = "dev.convergence.tenant.key.issued.v1"
	TypeBudgetThreshold   = "dev.convergence.budget.threshold.v1"
	TypeUsageRecorded     = "dev.convergence.usage.recorded.v1"
)

// TenantState is a tenant's lifecycle state.
type TenantState string

// The lifecycle states, as DESIGN.md lists them.
const (
	StateProvisioning TenantState = "provisioning"
	StateRunning      TenantState = "running"
	StateUnhealthy    TenantState = "unhealthy"
	StateStopped      TenantState = "stopped"
	StateError        TenantState = "error"
	StateDestroyed    TenantState = "destroyed"
)

// Valid reports whether s is one of the lifecycle states.
func (s TenantState) Valid() bool {
	switch s {
	case StateProvisioning, StateRunning, StateUnhealthy, StateStopped, StateError, StateDestroyed:
		return true
	}
	return false
}

// LifecycleSubject is the subject of a tenant's lifecycle fact: tenant.lifecycle.<state>.<envId>.
func LifecycleSubject(state TenantState, envID int64) string {
	return fmt.Sprintf("tenant.lifecycle.%s.%d", state, envID)
}

// LifecycleFilter is a subject filter for the lifecycle facts of one state (or "*" for any)
// and one tenant (0 for any), for an integrator's consumer.
func LifecycleFilter(state TenantState, envID int64) string {
	st, id := string(state), "*"
	if st == "" {
		st = "*"
	}
	if envID != 0 {
		id = strconv.FormatInt(envID, 10)
	}
	return "tenant.lifecycle." + st + "." + id
}

// KeyIssuedSubject is the subject of the fact that tenant envID was given a key.
func KeyIssuedSubject(envID int64) string { return "tenant.key.issued." + strconv.FormatInt(envID, 10) }

// BudgetThresholdSubject is the subject of a threshold crossed by the budget of organization
// orgID, or of its tenant envID (0 for the organization's).
func BudgetThresholdSubject(orgID, envID int64) string {
	return "budget.threshold." + strconv.FormatInt(orgID, 10) + "." + strconv.FormatInt(envID, 10)
}

// UsageRecordedSubject is the subject of usage the ledger recorded for organization orgID.
func UsageRecordedSubject(orgID int64) string {
	return "usage.recorded." + strconv.FormatInt(orgID, 10)
}

// ProgressSubject is the core-NATS subject on which a task's live progress is published.
func ProgressSubject(taskID string) string { return "converge.progress." + taskID }

// DeadLetterSubject is where a consumer's poison messages are copied before they are dropped.
func DeadLetterSubject(consumer string) string { return "deadletter." + consumer }
