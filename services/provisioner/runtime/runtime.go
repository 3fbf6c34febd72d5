package runtime

import (
	"context"
	"io"
	"time"
)

// Runtime is what the provisioner drives: one implementation per way of running tenants,
// [Docker] (containers on one engine) and [Swarm] (a service per tenant on a swarm). Every
// method takes a ctx that bounds it and is safe for concurrent use on different tenants; for
// one tenant, the caller serializes Ensure, PutSecrets and Remove.
type Runtime interface {
	// Ensure makes the tenant's network, secrets and workload exist, match spec, and run. It
	// is idempotent: a workload of the same spec hash is left running (or started), one of
	// another hash is replaced. A failed call leaves nothing it created behind, and its error
	// wraps [ErrImageNotFound], [ErrHardeningNotApplied], [ErrPortUnavailable], [ErrNoSubnet],
	// [ErrNotManaged] or [ErrInvalidSpec] where one applies.
	Ensure(ctx context.Context, spec Spec) (Instance, error)
	// WaitHealthy blocks until GET /health on hostPort answers 200 from outside the tenant,
	// returning an [*ExitError] as soon as the tenant's app exits or is restarted, and an
	// error saying what the last probe saw when ctx is done.
	WaitHealthy(ctx context.Context, envID int64, hostPort int) error
	// Probe GETs /health on hostPort once and returns nil on 200.
	Probe(ctx context.Context, hostPort int) error
	// Inspect reports the tenant's state, health, exit, restarts and uptime with quick
	// engine calls; a tenant with nothing running has State [StateMissing] and no error.
	Inspect(ctx context.Context, envID int64) (Status, error)
	// Status is Inspect plus CPU and memory use, where the engine running the tenant
	// reports them; it may take about a second.
	Status(ctx context.Context, envID int64) (Status, error)
	// Logs returns the tenant's output, stdout and stderr merged, as plain text; it wraps
	// [ErrNotFound] when the tenant has nothing running. The caller closes the reader.
	Logs(ctx context.Context, envID int64, opts LogOptions) (io.ReadCloser, error)
	// PutSecrets replaces the tenant's secret files of the same names ([Spec.Secrets]); it
	// wraps [ErrNotFound] when the tenant has nothing running.
	PutSecrets(ctx context.Context, envID int64, secrets map[string]string) error
	// Remove stops the tenant (SIGTERM, then SIGKILL after grace) and removes everything the
	// runtime made for it, returning its last log lines. Repeating it is safe.
	Remove(ctx context.Context, envID int64, grace time.Duration) (Removal, error)
	// List returns every object carrying the runtime's labels, for the reconciler.
	List(ctx context.Context) ([]Object, error)
	// Owns reports whether o, as List returned it, carries a name the runtime gives one of
	// tenant o.EnvID's objects: the reconciler never touches a labelled object named
	// otherwise.
	Owns(o Object) bool
	// Events streams lifecycle events of the tenants' containers until ctx is done or the
	// engine stream fails; both channels close when it ends.
	Events(ctx context.Context) (<-chan Event, <-chan error)
	// CheckImage returns nil when ref can run, and an error wrapping [ErrImageNotFound]
	// (saying how to get it) when it is not on the engine: images are never pulled.
	CheckImage(ctx context.Context, ref string) error
	// ContainerName is the deterministic name of the tenant's container ([Docker]) or
	// service ([Swarm]).
	ContainerName(envID int64) string
	// NetworkName is the deterministic name of the tenant's own network.
	NetworkName(envID int64) string
}

var (
	_ Runtime = (*Docker)(nil)
	_ Runtime = (*Swarm)(nil)
)

// Instance is what [Runtime.Ensure] made or found.
type Instance struct {
	EnvID int64
	// ContainerID and ContainerName are the container's on [Docker], the service's on [Swarm].
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

// Status is a tenant's live state. Usage fields are zero unless State is running. On [Swarm]
// it describes the service's current task and that task's container.
type Status struct {
	EnvID         int64
	State         State
	Health        Health
	ContainerID   string
	ContainerName string
	// Node is the hostname of the swarm node running the tenant's task; empty on [Docker].
	Node       string
	Image      string
	HostPort   int
	Generation int64
	SpecHash   string
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
	// Existed is false when there was no container or service (the call was a repeat).
	Existed bool
	// ContainerID is the container's id on [Docker], the service's on [Swarm].
	ContainerID string
	// ExitCode is the container's exit code after it stopped.
	ExitCode int
	// LastLogs holds its last log lines, stdout and stderr merged, for archiving.
	LastLogs []byte
}

// ObjectKind tells containers, services, networks, volumes and secrets apart in [Object].
type ObjectKind string

// Object kinds. [Docker] makes containers, networks and volumes; [Swarm] services, networks
// and secrets.
const (
	KindContainer ObjectKind = "container"
	KindService   ObjectKind = "service"
	KindNetwork   ObjectKind = "network"
	KindVolume    ObjectKind = "volume"
	KindSecret    ObjectKind = "secret"
)

// Object is one managed object, as [Runtime.List] reports it. Ids read from
// labels are zero when a label is missing or malformed.
type Object struct {
	Kind       ObjectKind
	ID         string
	Name       string
	EnvID      int64
	OrgID      int64
	Generation int64
	SpecHash   string
	// State is the container's state; it is empty for every other kind.
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
