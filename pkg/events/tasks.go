package events

import (
	"encoding/json"
	"time"
)

// Subjects the converger answers on: core NATS request/reply, served by every converger replica
// in one queue group. The API asks them for its task and webhook endpoints.
const (
	SubjectTaskGet       = "converger.task.get"
	SubjectTaskCancel    = "converger.task.cancel"
	SubjectWebhookSecret = "converger.webhook.secret"
)

// Task statuses: queued → running → completed | failed | cancelled.
const (
	TaskQueued    = "queued"
	TaskRunning   = "running"
	TaskCompleted = "completed"
	TaskFailed    = "failed"
	TaskCancelled = "cancelled"
)

// TaskQuery (on SubjectTaskGet) asks for a tenant's task, answered by a TaskState. A task of
// another tenant is not found.
type TaskQuery struct {
	EnvID  int64  `json:"envId"`
	TaskID string `json:"taskId"`
	// Transcript puts every round into the task view's rounds.
	Transcript bool `json:"transcript,omitempty"`
	// Rounds asks for the rounds numbered above RoundsAfter in TaskState.Rounds.
	Rounds      bool `json:"rounds,omitempty"`
	RoundsAfter int  `json:"roundsAfter,omitempty"`
}

// TaskState is a task as the converger records it.
type TaskState struct {
	// Status is queued, running, completed, failed or cancelled.
	Status string `json:"status"`
	// Task is the task as the API shows it (GET /api/v1/converge/:taskId's task).
	Task   json.RawMessage `json:"task"`
	Rounds []TaskRound     `json:"rounds,omitempty"`
}

// Finished reports whether the task has ended.
func (s TaskState) Finished() bool {
	return s.Status == TaskCompleted || s.Status == TaskFailed || s.Status == TaskCancelled
}

// TaskRound is one scored round as the API shows it, with its number.
type TaskRound struct {
	Number int             `json:"number"`
	View   json.RawMessage `json:"view"`
}

// TaskCancel (on SubjectTaskCancel) asks the converger to cancel a tenant's task, answered by a
// TaskState (its status after the request: cancelled for a task that had not started, still
// running for one whose run stops at its next step). Request is the task's request, so a
// task whose converge.request the converger has not yet seen is recorded, and cancelled, all
// the same.
type TaskCancel struct {
	Request   ConvergeRequest `json:"request"`
	RequestID string          `json:"requestId,omitempty"`
}

// WebhookSecretRequest (on SubjectWebhookSecret) asks for a tenant's webhook signing secret,
// made on first use, or with Rotate for a new one.
type WebhookSecretRequest struct {
	EnvID  int64 `json:"envId"`
	Rotate bool  `json:"rotate,omitempty"`
}

// WebhookSecret is a tenant's webhook signing secret (whsec_..., Standard Webhooks). After a
// rotation the previous secret also signs deliveries until PreviousExpiresAt.
type WebhookSecret struct {
	Secret            string     `json:"secret"`
	PreviousSecret    string     `json:"previousSecret,omitempty"`
	PreviousExpiresAt *time.Time `json:"previousExpiresAt,omitempty"`
	CreatedAt         time.Time  `json:"createdAt"`
	RotatedAt         time.Time  `json:"rotatedAt"`
}

// Subjects on which the converger answers for its finished tasks, for the metering's
// reconciliation of its ledger.
const (
	SubjectTasksFinished = "converger.tasks.finished"
	SubjectTasksKnown    = "converger.tasks.known"
)

// FinishedTasksQuery (on SubjectTasksFinished) asks for the tasks that finished (completed,
// failed or cancelled) from From up to To (excluded), in order of finish time and ID: a page of
// at most Limit after the task AfterTaskID that finished at AfterFinishedAt (none for the first
// page). It is answered by FinishedTasks.
type FinishedTasksQuery struct {
	From            time.Time `json:"from"`
	To              time.Time `json:"to"`
	AfterFinishedAt time.Time `json:"afterFinishedAt,omitzero"`
	AfterTaskID     string    `json:"afterTaskId,omitempty"`
	Limit           int       `json:"limit"`
}

// FinishedTasks is a page of finished tasks; More says whether pages are left.
type FinishedTasks struct {
	Tasks []FinishedTask `json:"tasks"`
	More  bool           `json:"more"`
}

// FinishedTask is a finished task as the converger recorded it: its exact usage, by agent
// where its result has them, and the model its request named.
type FinishedTask struct {
	TaskID           string       `json:"taskId"`
	EnvID            int64        `json:"envId"`
	OrgID            int64        `json:"orgId"`
	Status           string       `json:"status"`
	FinishedAt       time.Time    `json:"finishedAt"`
	Usage            Usage        `json:"usage"`
	ConvergenceScore *float64     `json:"convergenceScore,omitempty"`
	Model            string       `json:"model,omitempty"`
	Agents           []AgentUsage `json:"agents,omitempty"`
}

// MaxPage bounds a page of FinishedTasks and the TaskIDs of a KnownTasksQuery, so that an
// answer stays far below NATS's message size limit.
const MaxPage = 1000

// KnownTasksQuery (on SubjectTasksKnown) asks which of TaskIDs (at most MaxPage) the converger
// has a record of, answered by KnownTasks.
type KnownTasksQuery struct {
	TaskIDs []string `json:"taskIds"`
}

// KnownTasks lists the task IDs of a KnownTasksQuery that the converger knows, and the record
// of each: its tenant, status and exact usage (FinishedAt is zero for a task not finished).
// Metering bills a result only when the record vouches for it.
type KnownTasks struct {
	TaskIDs []string       `json:"taskIds"`
	Records []FinishedTask `json:"records,omitempty"`
}

// SubjectModelResolve is where the converger says which provider and model a task naming a
// model would call, for the API to check the price of before it accepts the task.
const SubjectModelResolve = "converger.model.resolve"

// ModelQuery (on SubjectModelResolve) names the model of a task; empty is the provider's
// default. It is answered by ModelResolved.
type ModelQuery struct {
	Model string `json:"model,omitempty"`
}

// ModelResolved is the provider a task would call and the model it would ask for: the query's,
// or the provider's configured default (empty when the converger does not know it).
type ModelResolved struct {
	Provider string `json:"provider"`
	Model    string `json:"model,omitempty"`
}
