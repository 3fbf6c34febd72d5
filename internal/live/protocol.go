// Package live carries a tenant's live container state and logs from the provisioner, the one
// service that talks to the Docker engine, to the API, which must not, over core NATS.
//
// Status is a plain request/reply on [SubjectStatus]. Logs stream: the API publishes a
// [LogsRequest] on [SubjectLogs] with a reply inbox; the provisioner answers on that inbox with
// a start message naming a control subject, then data chunks numbered from 1, then an end
// message (clean, or with an error). While a stream follows, each side tells the other it is
// still there every [Heartbeat]: the API on the control subject, the provisioner with ping
// messages; a side that hears nothing for [heartbeatLoss] ends the stream. The API says stop
// on the control subject when its client leaves. Core NATS may drop messages for a slow
// reader; the API sees a gap in the chunk numbers and ends the stream with [ErrDataLost]
// rather than show logs with a hole.
//
// Both subjects are served by a queue group, so any one provisioner replica answers.
package live

import (
	"errors"
	"time"
)

// Subjects the provisioner serves.
const (
	SubjectStatus = "provisioner.live.status"
	SubjectLogs   = "provisioner.live.logs"
	queueGroup    = "provisioner"
	// controlPrefix starts the control subject of each log stream (a unique token follows), so
	// that the API sends to the provisioner only under the provisioner's own subjects.
	controlPrefix = "provisioner.live.control."
)

// Heartbeat is how often each side of a following log stream says it is still there.
const Heartbeat = 5 * time.Second

// heartbeatLoss is how long a side waits without hearing from the other before it ends a
// following stream.
const heartbeatLoss = 3 * Heartbeat

// chunkSize bounds one data message; far below NATS's default 1 MiB payload limit.
const chunkSize = 32 << 10

// Headers of the stream messages.
const (
	hdrKind    = "Convergence-Live-Kind"    // start, data, ping, end
	hdrSeq     = "Convergence-Live-Seq"     // data: 1, 2, ...
	hdrControl = "Convergence-Live-Control" // start: where the API sends alive and stop
	hdrCode    = "Convergence-Live-Code"    // end: empty when clean, else an error code
	hdrError   = "Convergence-Live-Error"   // end: the error's message
)

// Message kinds.
const (
	kindStart = "start"
	kindData  = "data"
	kindPing  = "ping"
	kindEnd   = "end"
)

// Control messages from the API.
const (
	ctlAlive = "alive"
	ctlStop  = "stop"
)

// Error codes of an end message and a status reply.
const (
	codeNotFound = "not_found"
	codeInvalid  = "invalid"
	codeInternal = "internal"
	codeStopping = "stopping"
)

var (
	// ErrUnavailable means no provisioner answered in time.
	ErrUnavailable = errors.New("no provisioner answered")
	// ErrNotFound means the tenant has no container.
	ErrNotFound = errors.New("tenant has no container")
	// ErrDataLost means log chunks were lost on the way; the stream ended rather than show a
	// gap.
	ErrDataLost = errors.New("log stream lost data")
)

// StatusRequest asks for a tenant's live state.
type StatusRequest struct {
	EnvID int64 `json:"envId"`
}

// statusReply is the provisioner's answer: Status, or an error.
type statusReply struct {
	Status *Status `json:"status,omitempty"`
	Code   string  `json:"code,omitempty"`
	Error  string  `json:"error,omitempty"`
}

// Status is a tenant container's live state, as the API shows it.
type Status struct {
	// State is the engine's container state, or "missing" when there is no container.
	State string `json:"state"`
	// Health is the image's own health check: healthy, unhealthy, starting, or none.
	Health        string    `json:"health"`
	ContainerID   string    `json:"containerId,omitempty"`
	ContainerName string    `json:"containerName,omitempty"`
	Image         string    `json:"image,omitempty"`
	HostPort      int       `json:"port,omitempty"`
	Generation    int64     `json:"generation,omitempty"`
	RestartCount  int       `json:"restartCount"`
	StartedAt     time.Time `json:"startedAt,omitzero"`
	UptimeSeconds int64     `json:"uptimeSeconds"`
	// CPUPercent is CPU use over the engine's last sample, 100 being one full core;
	// CPULimit is the quota in cores.
	CPUPercent float64 `json:"cpuPercent"`
	CPULimit   float64 `json:"cpuLimit"`
	// MemoryBytes is memory in use without reclaimable page cache.
	MemoryBytes      uint64 `json:"memoryBytes"`
	MemoryLimitBytes uint64 `json:"memoryLimitBytes"`
	PIDs             uint64 `json:"pids"`
	// ExitCode, OOMKilled and Error describe the last exit of a container that is not running.
	ExitCode  int    `json:"exitCode"`
	OOMKilled bool   `json:"oomKilled"`
	Error     string `json:"error,omitempty"`
}

// LogsRequest selects a tenant's log lines.
type LogsRequest struct {
	EnvID int64 `json:"envId"`
	// Tail keeps the last Tail lines; zero means all.
	Tail int `json:"tail,omitempty"`
	// Since drops lines written before it.
	Since      time.Time `json:"since,omitzero"`
	Follow     bool      `json:"follow,omitempty"`
	Timestamps bool      `json:"timestamps,omitempty"`
}
