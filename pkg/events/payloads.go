package events

import "time"

// Usage counts tokens the same way everywhere: for an agent, a task, a tenant or an
// organization. InputTokens includes CachedTokens (the part of the input a provider served from
// its cache); TotalTokens is InputTokens + OutputTokens.
type Usage struct {
	InputTokens  int64 `json:"inputTokens"`
	OutputTokens int64 `json:"outputTokens"`
	CachedTokens int64 `json:"cachedTokens"`
	TotalTokens  int64 `json:"totalTokens"`
}

// Add returns the sum of u and v.
func (u Usage) Add(v Usage) Usage {
	return Usage{
		InputTokens:  u.InputTokens + v.InputTokens,
		OutputTokens: u.OutputTokens + v.OutputTokens,
		CachedTokens: u.CachedTokens + v.CachedTokens,
		TotalTokens:  u.TotalTokens + v.TotalTokens,
	}
}

// Limits are a tenant container's resource limits. Zero means the platform default.
type Limits struct {
	MemoryBytes int64 `json:"memoryBytes,omitempty"`
	NanoCPUs    int64 `json:"nanoCpus,omitempty"`
	PIDs        int64 `json:"pids,omitempty"`
}

// TenantSpawn (type TypeTenantSpawn, subject SubjectTenantSpawn) asks the provisioner to start
// a tenant the API has already recorded with status provisioning and a leased port.
type TenantSpawn struct {
	EnvID      int64  `json:"envId"`
	OrgID      int64  `json:"orgId"`
	Name       string `json:"name"`
	Image      string `json:"image"`
	Port       int    `json:"port"`
	Generation int64  `json:"generation"`
	Limits     Limits `json:"limits"`
	// Egress is one of EgressClasses; "" (a command from before egress classes) is
	// EgressDefault.
	Egress string `json:"egress,omitempty"`
}

// TenantDestroy (type TypeTenantDestroy, subject SubjectTenantDestroy) asks the provisioner to
// stop and remove a tenant.
type TenantDestroy struct {
	EnvID int64 `json:"envId"`
	OrgID int64 `json:"orgId"`
}

// TenantLifecycle (type TypeTenantLifecycle, subject LifecycleSubject(State, EnvID)) is the fact
// that a tenant entered State. At is when the provisioner saw the change; metering derives
// container run time from the running, stopped and destroyed facts.
type TenantLifecycle struct {
	EnvID     int64       `json:"envId"`
	OrgID     int64       `json:"orgId"`
	Name      string      `json:"name"`
	State     TenantState `json:"state"`
	PrevState TenantState `json:"prevState,omitempty"`
	Reason    string      `json:"reason,omitempty"`
	Port      int         `json:"port,omitempty"`
	At        time.Time   `json:"at"`
}

// TenantKeyIssued (type TypeTenantKeyIssued, subject KeyIssuedSubject(EnvID)) is the fact
// that the provisioner gave tenant EnvID a key: its SHA-256 digest, never the key. The API
// authenticates the tenant's calls with it.
type TenantKeyIssued struct {
	EnvID     int64     `json:"envId"`
	OrgID     int64     `json:"orgId"`
	Name      string    `json:"name"`
	KeyDigest []byte    `json:"keyDigest"`
	KeyPrefix string    `json:"keyPrefix"`
	IssuedAt  time.Time `json:"issuedAt"`
}

// ConvergeRequest (type TypeConvergeRequest, subject SubjectConvergeRequest) asks the converger
// to run a task: the request as the API accepted it, validated, with the type, roles and max
// rounds filled in. It carries all the converger needs; the converger records the task when
// it first sees it. TokenBudget and TimeoutSeconds are zero unless the caller set them, so the
// converger's defaults apply.
type ConvergeRequest struct {
	TaskID         string  `json:"taskId"`
	EnvID          int64   `json:"envId"`
	OrgID          int64   `json:"orgId"`
	Type           string  `json:"type"`
	Prompt         string  `json:"prompt"`
	AgentARole     string  `json:"agentARole"`
	AgentBRole     string  `json:"agentBRole"`
	Context        string  `json:"context,omitempty"`
	MaxRounds      int     `json:"maxRounds"`
	Model          string  `json:"model,omitempty"`
	TokenBudget    int64   `json:"tokenBudget,omitempty"`
	TimeoutSeconds float64 `json:"timeoutSeconds,omitempty"`
	WebhookURL     string  `json:"webhookUrl,omitempty"`
}

// AgentUsage is one agent's token usage within a task, with the provider and model that
// served it: the unit metering prices.
type AgentUsage struct {
	Agent    string `json:"agent"` // "A", "B", or "synthesis"
	Provider string `json:"provider"`
	Model    string `json:"model"`
	Calls    int64  `json:"calls"`
	Usage
}

// ConvergeCompleted (type TypeConvergeCompleted, subject SubjectConvergeCompleted) is the fact
// that a task finished with a result, converged or not.
type ConvergeCompleted struct {
	TaskID           string       `json:"taskId"`
	EnvID            int64        `json:"envId"`
	OrgID            int64        `json:"orgId"`
	Type             string       `json:"type"`
	StopReason       string       `json:"stopReason"`
	ConvergenceScore float64      `json:"convergenceScore"`
	Rounds           int          `json:"rounds"`
	Usage            Usage        `json:"usage"`
	Agents           []AgentUsage `json:"agents"`
	FinishedAt       time.Time    `json:"finishedAt"`
}

// ConvergeFailed (type TypeConvergeFailed, subject SubjectConvergeFailed) is the fact that a
// task ended without a result. Tokens spent before the failure are still in Usage and Agents.
type ConvergeFailed struct {
	TaskID     string       `json:"taskId"`
	EnvID      int64        `json:"envId"`
	OrgID      int64        `json:"orgId"`
	Type       string       `json:"type"`
	StopReason string       `json:"stopReason"`
	Error      string       `json:"error"`
	Rounds     int          `json:"rounds"`
	Usage      Usage        `json:"usage"`
	Agents     []AgentUsage `json:"agents"`
	FinishedAt time.Time    `json:"finishedAt"`
}
