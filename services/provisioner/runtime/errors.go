package runtime

import (
	"errors"
	"fmt"
	"strings"

	"github.com/docker/docker/errdefs"
)

var (
	// ErrInvalidSpec marks a [Spec] that cannot describe a container; retrying will not help.
	ErrInvalidSpec = errors.New("invalid spec")
	// ErrImageNotFound means the spec's image does not exist on the engine. The runtime never
	// pulls, so the image must be built or loaded first; retrying will not help.
	ErrImageNotFound = errors.New("image not found")
	// ErrHardeningNotApplied means the engine created the container without one of the
	// hardening settings (a kernel without the PID controller drops the PID limit, for
	// example). The container has been removed; retrying on the same engine will not help.
	ErrHardeningNotApplied = errors.New("container hardening not applied")
	// ErrPortUnavailable means the host port is already bound by something else. Nothing is
	// left behind; the caller may lease another port and try again.
	ErrPortUnavailable = errors.New("host port unavailable")
	// ErrNoSubnet means no subnet is left for another tenant network: the subnet pool (or the
	// engine's default pools) is used up. Remove tenants or widen DockerConfig.SubnetPool.
	ErrNoSubnet = errors.New("no free subnet for the tenant network")
	// ErrNotFound means the tenant has no container.
	ErrNotFound = errors.New("tenant container not found")
	// ErrNotManaged means an object with the tenant's deterministic name exists but does not
	// carry this runtime's labels. The runtime never touches such objects.
	ErrNotManaged = errors.New("object not managed by convergence")
)

// ExitError says why a tenant container stopped while [Runtime.WaitHealthy] waited for it.
type ExitError struct {
	// Container is the container's name.
	Container string
	// ExitCode is the exit code of its last run.
	ExitCode int
	// OOMKilled is true when the kernel killed it for exceeding its memory limit.
	OOMKilled bool
	// RestartCount is how often the engine has restarted it under its restart policy.
	RestartCount int
	// EngineError is the engine's own error, such as a failed exec of the entrypoint.
	EngineError string
	// LastLogs holds the first and last lines its last run wrote (a crash usually says why
	// first), stdout and stderr merged.
	LastLogs string
}

// Error says what happened in one readable message, ending with the last log lines.
func (e *ExitError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "container %s exited with code %d", e.Container, e.ExitCode)
	if e.OOMKilled {
		b.WriteString(" (killed: out of memory)")
	}
	switch {
	case e.RestartCount == 1:
		b.WriteString(" after 1 restart")
	case e.RestartCount > 1:
		fmt.Fprintf(&b, " after %d restarts", e.RestartCount)
	}
	if e.EngineError != "" {
		fmt.Fprintf(&b, ": %s", e.EngineError)
	}
	if logs := strings.TrimSpace(e.LastLogs); logs != "" {
		fmt.Fprintf(&b, "; last log lines:\n%s", logs)
	}
	return b.String()
}

// isNotFound reports whether err is the engine's "no such object" answer.
//
// It uses the docker module's errdefs aliases because github.com/containerd/errdefs, which they
// forward to, is not a direct requirement of go.mod; switch to cerrdefs once it is.
func isNotFound(err error) bool {
	return errdefs.IsNotFound(err) //nolint:staticcheck // see the doc comment.
}

// isConflict reports whether err is the engine's "name already in use" answer.
func isConflict(err error) bool {
	return errdefs.IsConflict(err) //nolint:staticcheck // see isNotFound.
}

// isPortInUse reports whether err is the engine failing to bind a published host port. The
// engine reports this only as text, in two wordings depending on who noticed.
func isPortInUse(err error) bool {
	if err == nil {
		return false
	}
	msg := err.Error()
	return strings.Contains(msg, "port is already allocated") ||
		strings.Contains(msg, "address already in use")
}
