package runtime

import (
	"context"
	"io"
	"time"
)

// Runtime runs tenant containers. Every method takes a ctx that bounds it, and every method is
// safe for concurrent use on different tenants. For one tenant, the caller serializes Ensure
// and Remove (the provisioner handles one command per tenant at a time); concurrent Ensures of
// the same spec converge on one container.
type Runtime interface {
	// Ensure makes the tenant's network and container exist, match spec and run. It is
	// idempotent: when a container with the same spec hash exists it is only started if it
	// is not running. A container with another hash is replaced. On any error nothing that
	// this call created is left behind.
	Ensure(ctx context.Context, spec Spec) (Instance, error)
	// WaitHealthy blocks until GET /health on the tenant's published hostPort answers 200,
	// probing from outside the container. It fails fast with an [*ExitError] when the
	// container exits or restarts meanwhile, and otherwise when ctx is done.
	WaitHealthy(ctx context.Context, envID int64, hostPort int) error
	// Status reports the tenant's live state and resource use. A tenant without a container
	// has State [StateMissing] and no error.
	Status(ctx context.Context, envID int64) (Status, error)
	// Inspect is Status without the resource use, which takes a sample over about a second:
	// it reports state, health, exit, restarts and uptime with one quick engine call.
	Inspect(ctx context.Context, envID int64) (Status, error)
	// Probe GETs /health on the tenant's published hostPort once, from outside the container,
	// and returns nil when it answers 200, or an error saying what it saw instead.
	Probe(ctx context.Context, hostPort int) error
	// Logs returns the tenant's output, stdout and stderr merged as plain text. The caller
	// must close the reader; with Follow it streams until the container stops, ctx is done,
	// or it is closed. It wraps [ErrNotFound] when the tenant has no container.
	Logs(ctx context.Context, envID int64, opts LogOptions) (io.ReadCloser, error)
	// Remove stops the tenant's container (SIGTERM, then SIGKILL after grace), keeps its last
	// log lines in the returned [Removal] for archiving, and removes the container and the
	// network. It is idempotent: a tenant with nothing left is removed successfully.
	Remove(ctx context.Context, envID int64, grace time.Duration) (Removal, error)
	// List returns every container and network this runtime manages, for the reconciler.
	List(ctx context.Context) ([]Object, error)
	// Events streams lifecycle events of managed containers until ctx is done. Both channels
	// close when the stream ends; the error channel yields one error first when the stream
	// broke for another reason than ctx (the engine restarted, say), after which the caller
	// subscribes again and reconciles with List to cover the gap.
	Events(ctx context.Context) (<-chan Event, <-chan error)
}

// Instance is what [Runtime.Ensure] made or found.
type Instance struct {
	EnvID         int64
	ContainerID   string
	ContainerName string
	NetworkID     string
	NetworkName   string
	HostPort      int
	SpecHash      string
	// Created is true when this call created the container, false when one with the same
	// spec hash already existed.
	Created bool
}

// State is a container's state as the engine reports it, or [StateMissing].
type State string

// Container states.
const (
	StateMissing    State = "missing"
	StateCreated    State = "created"
	StateRunning    State = "running"
	StateRestarting State = "restarting"
	StatePaused     State = "paused"
	StateRemoving   State = "removing"
	StateExited     State = "exited"
	StateDead       State = "dead"
)

// Health is the result of the image's own HEALTHCHECK, as the engine reports it.
type Health string

// Health values; [HealthNone] means the image defines no health check.
const (
	HealthNone      Health = "none"
	HealthStarting  Health = "starting"
	HealthHealthy   Health = "healthy"
	HealthUnhealthy Health = "unhealthy"
)

// Status is a tenant container's live state. Usage fields are zero unless State is running.
type Status struct {
	EnvID         int64
	State         State
	Health        Health
	ContainerID   string
	ContainerName string
	Image         string
	HostPort      int
	Generation    int64
	SpecHash      string
	// ExitCode, OOMKilled and Error describe the last exit when the container is not running.
	ExitCode  int
	OOMKilled bool
	Error     string
	// RestartCount is how often the engine restarted the container under its restart policy.
	RestartCount int
	// StartedAt is when the current (or last) run started; Uptime is the time since then
	// while running.
	StartedAt time.Time
	Uptime    time.Duration
	// CPUPercent is CPU use over the engine's last sampling interval (about a second), where
	// 100 is one full core; CPULimit is the quota in cores.
	CPUPercent float64
	CPULimit   float64
	// MemoryBytes is memory in use without the reclaimable page cache (usage minus inactive
	// file pages), which is what the kernel weighs against MemoryLimitBytes.
	MemoryBytes      uint64
	MemoryLimitBytes uint64
	// PIDs is the number of processes and threads.
	PIDs uint64
}

// LogOptions selects a tenant's log lines.
type LogOptions struct {
	// Tail keeps only the last Tail lines; zero or less means all.
	Tail int
	// Since drops lines written before it; zero means no limit.
	Since time.Time
	// Follow keeps streaming new lines until the container stops or the reader is closed.
	Follow bool
	// Timestamps prefixes each line with the engine's RFC 3339 timestamp.
	Timestamps bool
}

// Removal is what [Runtime.Remove] found and removed.
type Removal struct {
	// Existed is false when there was no container (the call was a repeat).
	Existed     bool
	ContainerID string
	// ExitCode is the container's exit code after it stopped.
	ExitCode int
	// LastLogs holds its last log lines, stdout and stderr merged, for archiving.
	LastLogs []byte
}

// ObjectKind tells containers from networks in [Object].
type ObjectKind string

// Object kinds.
const (
	KindContainer ObjectKind = "container"
	KindNetwork   ObjectKind = "network"
)

// Object is one managed container or network, as [Runtime.List] reports it. Ids read from
// labels are zero when a label is missing or malformed.
type Object struct {
	Kind       ObjectKind
	ID         string
	Name       string
	EnvID      int64
	OrgID      int64
	Generation int64
	SpecHash   string
	// State is the container's state; it is empty for networks.
	State   State
	Labels  map[string]string
	Created time.Time
}

// EventKind is what happened to a managed container.
type EventKind string

// Event kinds. EventStart also follows each automatic restart.
const (
	EventStart   EventKind = "start"
	EventDie     EventKind = "die"
	EventOOM     EventKind = "oom"
	EventHealth  EventKind = "health_status"
	EventDestroy EventKind = "destroy"
)

// Event is one lifecycle event of a managed container.
type Event struct {
	Kind          EventKind
	EnvID         int64
	ContainerID   string
	ContainerName string
	// ExitCode is set for EventDie.
	ExitCode int
	// Health is set for EventHealth.
	Health Health
	Time   time.Time
}
