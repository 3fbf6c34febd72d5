package provisioner

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/convergence-dev/convergence/pkg/events"
	"github.com/convergence-dev/convergence/services/provisioner/ports"
	"github.com/convergence-dev/convergence/services/provisioner/runtime"
)

// probeFailuresToUnhealthy is how many failed GET /health probes in a row make a running
// tenant unhealthy, so one slow answer does not flap its state.
const probeFailuresToUnhealthy = 2

// probeFailures counts failed probes in a row per tenant.
type probeFailures struct {
	mu sync.Mutex
	m  map[int64]int
}

func (p *probeFailures) record(envID int64, failed bool) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.m == nil {
		p.m = map[int64]int{}
	}
	if !failed {
		delete(p.m, envID)
		return 0
	}
	p.m[envID]++
	return p.m[envID]
}

// watched reports whether the health watcher looks after a tenant in this state: one the
// operator wants running and that has finished provisioning.
func watched(t tenant) bool {
	if t.Desired != desiredRunning {
		return false
	}
	switch t.Status {
	case events.StateRunning, events.StateUnhealthy, events.StateStopped, events.StateError:
		return true
	}
	return false
}

// observe compares a watched tenant with its container and records what changed. The policy:
//
//   - running, and GET /health answers (and the image's own check, if any, does not say
//     unhealthy): running;
//   - running but the image's check says unhealthy, or /health failed twice in a row, or the
//     engine is restarting it after a crash: unhealthy;
//   - exited with code 0, or paused, or created and never started: stopped;
//   - exited with another code, killed for memory, or dead: error, with the exit as reason;
//   - no container at all: recreated (and back to running) unless the tenant is in error,
//     which keeps nothing; a failed tenant's port is released.
//
// Before that, a rotated key that waited longer than deliveryGrace for its delivery (its
// rotation's asker stopped in between) is put into the container. The caller holds the
// tenant's lock.
func (s *Service) observe(ctx context.Context, t tenant) error {
	if t.KeyPendingSince != nil && time.Since(*t.KeyPendingSince) >= deliveryGrace {
		s.metrics.reconcileActions.WithLabelValues(actionDeliverKey).Inc()
		if _, err := s.deliverKey(ctx, t); err != nil {
			return err
		}
	}
	st, err := s.rt.Inspect(ctx, t.ID)
	if err != nil {
		return err
	}
	if st.State == runtime.StateMissing {
		if t.Status == events.StateError {
			if t.Port == 0 {
				return nil
			}
			return pgx.BeginFunc(ctx, s.deps.Pool, func(tx pgx.Tx) error { return ports.Release(ctx, tx, t.ID) })
		}
		s.log.Warn("tenant container missing; recreating it", "envId", t.ID, "status", t.Status)
		s.metrics.reconcileActions.WithLabelValues(actionRecreate).Inc()
		return s.provision(ctx, t, "")
	}

	var to events.TenantState
	var health runtime.Health
	var reason string
	switch st.State {
	case runtime.StateRunning:
		probeErr := s.rt.Probe(ctx, cmp.Or(t.Port, st.HostPort))
		failures := s.probes.record(t.ID, probeErr != nil)
		switch {
		case st.Health == runtime.HealthUnhealthy:
			to, health, reason = events.StateUnhealthy, runtime.HealthUnhealthy, "the image's health check reports unhealthy"
		case probeErr != nil && failures >= probeFailuresToUnhealthy:
			to, health, reason = events.StateUnhealthy, runtime.HealthUnhealthy, probeErr.Error()
		case probeErr != nil:
			return nil // Once is not yet a trend.
		default:
			to, health = events.StateRunning, runtime.HealthHealthy
		}
	case runtime.StateRestarting:
		to, health = events.StateUnhealthy, runtime.HealthUnhealthy
		reason = fmt.Sprintf("restarting after a crash (%d restarts so far)", st.RestartCount)
	case runtime.StatePaused:
		to, reason = events.StateStopped, "the container is paused"
	case runtime.StateCreated:
		to, reason = events.StateStopped, "the container was created but not started"
	case runtime.StateExited, runtime.StateDead:
		if st.ExitCode == 0 && !st.OOMKilled && st.State == runtime.StateExited {
			to, reason = events.StateStopped, "the container exited with code 0"
		} else {
			to, reason = events.StateError, exitReason(st)
		}
	default:
		return nil // removing: the engine is busy with it; look again later.
	}
	if to == t.Status && health == runtime.Health(t.Health) {
		return nil
	}
	err = s.apply(ctx, t, change{to: to, health: health, reason: reason, onlyIfWanted: true})
	if errors.Is(err, errStale) {
		return nil // Someone else moved it; the next check sees the new state.
	}
	return err
}

// exitReason says why a container that is not running stopped.
func exitReason(st runtime.Status) string {
	msg := fmt.Sprintf("the container exited with code %d", st.ExitCode)
	if st.OOMKilled {
		msg += " (killed: out of memory)"
	}
	if st.RestartCount > 0 {
		msg += fmt.Sprintf(" after %d restarts", st.RestartCount)
	}
	if st.Error != "" {
		msg += ": " + st.Error
	}
	return msg
}
