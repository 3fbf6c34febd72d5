package runtime

import "time"

// Instance is what [Docker.Ensure] made or found.
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

// Removal is what [Docker.Remove] found and removed.
type Removal struct {
	// Existed is false when there was no container (the call was a repeat).
	Existed     bool
	ContainerID string
	// ExitCode is the container's exit code after it stopped.
	ExitCode int
	// LastLogs holds its last log lines, stdout and stderr merged, for archiving.
	LastLogs []byte
}

// ObjectKind tells containers, networks and volumes apart in [Object].
type ObjectKind string

// Object kinds.
const (
	KindContainer ObjectKind = "container"
	KindNetwork   ObjectKind = "network"
	KindVolume    ObjectKind = "volume"
)

// Object is one managed container, network or volume, as [Docker.List] reports it. Ids read from
// labels are zero when a label is missing or malformed.
type Object struct {
	Kind       ObjectKind
	ID         string
	Name       string
	EnvID      int64
	OrgID      int64
	Generation int64
	SpecHash   string
	// State is the container's state; it is empty for networks and volumes.
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
