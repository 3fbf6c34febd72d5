package provisioner

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/convergence-dev/convergence/pkg/events"
	"github.com/convergence-dev/convergence/services/provisioner/runtime"
)

// reconcile compares the database with the engine once and repairs the difference. The
// policy, for tenants the operator wants running:
//
//   - provisioning: on the pass at start, the provisioning is resumed, however old (a previous
//     run died in it, or no provisioner ran; Ensure adopts a container made before). On later
//     passes, one older than StuckAfter that nobody works on (its command was lost, or every
//     delivery failed) fails with that reason, leaving nothing behind;
//   - running, unhealthy, stopped, error: observed as the health watcher does, which
//     recreates a missing container and delivers a rotated key that waited too long (see
//     observe);
//
// for tenants whose destroy was requested: on the pass at start, or once the request is older
// than StuckAfter (its command was lost), the destroy is done here; and for the engine's
// objects:
//
//   - a labelled container or network of a destroyed tenant is removed;
//   - one whose tenant the database does not know is removed once it is older than
//     OrphanGrace (a spawn's database row always exists before its container, so a young
//     object may only be another database's, such as a test's);
//   - objects without the runtime's labels, or whose name is not the one this provisioner
//     gives the tenant, are never touched.
//
// Ports still leased to destroyed tenants are released, and compose files of tenants that are
// destroyed or unknown are removed. Tenants another goroutine is working on are skipped;
// errors are logged and left for the next pass.
func (s *Service) reconcile(ctx context.Context, atStart bool) {
	started := time.Now()
	defer func() { s.metrics.reconcileSeconds.Observe(time.Since(started).Seconds()) }()
	if err := s.reconcileOnce(ctx, atStart); err != nil && ctx.Err() == nil {
		s.log.Warn("reconcile", "err", err)
	}
}

func (s *Service) reconcileOnce(ctx context.Context, atStart bool) error {
	objects, err := s.rt.List(ctx)
	if err != nil {
		return err
	}
	owned := map[int64][]runtime.Object{}
	for _, o := range objects {
		if s.rt.Owns(o) {
			owned[o.EnvID] = append(owned[o.EnvID], o)
		}
	}
	files, err := s.composeFiles()
	if err != nil {
		return err
	}
	ids := slices.Concat(slices.Collect(maps.Keys(owned)), slices.Collect(maps.Keys(files)))
	tenants, err := s.loadTenants(ctx, ids)
	if err != nil {
		return err
	}
	known := make(map[int64]tenant, len(tenants))
	counts := map[events.TenantState]float64{}
	for _, t := range tenants {
		known[t.ID] = t
		if t.Status != events.StateDestroyed {
			counts[t.Status]++
		}
	}

	var wg sync.WaitGroup
	sem := make(chan struct{}, checkParallelism)
	work := func(envID int64, f func(t tenant, found bool) error) {
		sem <- struct{}{}
		unlock, ok := s.locks.tryLock(envID)
		if !ok {
			<-sem
			return // Someone is working on it; the next pass looks again.
		}
		wg.Go(func() {
			defer func() { <-sem }()
			defer unlock()
			// Read again under the lock: the row may have moved since the list was read.
			t, err := s.loadTenant(ctx, envID)
			found := err == nil
			if err != nil && !isNotFound(err) {
				s.log.Warn("reconcile: load tenant", "envId", envID, "err", err)
				return
			}
			if err := f(t, found); err != nil && ctx.Err() == nil {
				s.log.Warn("reconcile tenant", "envId", envID, "err", err)
			}
		})
	}

	// The engine's objects whose tenant is gone or unknown.
	for envID, objs := range owned {
		if t, ok := known[envID]; ok && t.Status != events.StateDestroyed {
			continue
		}
		work(envID, func(t tenant, found bool) error {
			switch {
			case found && t.Status == events.StateDestroyed:
				s.metrics.reconcileActions.WithLabelValues(actionRemoveDestroyedLeftover).Inc()
				s.log.Warn("removing what is left of a destroyed tenant", "envId", envID)
				return s.destroy(ctx, t, "")
			case found:
				return nil // Live after all: the tenant pass below handles it.
			case youngest(objs) < s.cfg.OrphanGrace:
				return nil
			}
			s.metrics.reconcileActions.WithLabelValues(actionRemoveOrphan).Inc()
			s.log.Warn("removing labelled objects of a tenant the database does not know", "envId", envID, "objects", len(objs))
			if _, err := s.rt.Remove(ctx, envID, 0); err != nil {
				return err
			}
			return s.removeComposeFile(envID)
		})
	}

	// The tenants.
	for _, t := range tenants {
		if t.Status == events.StateDestroyed {
			continue
		}
		work(t.ID, func(t tenant, found bool) error {
			if !found {
				return nil
			}
			return s.reconcileTenant(ctx, t, atStart)
		})
	}
	wg.Wait()

	// Compose files of tenants that are gone or unknown (old enough not to be a spawn's in
	// another database sharing this directory, which is a misconfiguration anyway).
	for envID, mtime := range files {
		t, ok := known[envID]
		if ok && t.Status != events.StateDestroyed {
			continue
		}
		if !ok && time.Since(time.Unix(mtime, 0)) < s.cfg.OrphanGrace {
			continue
		}
		if err := s.removeComposeFile(envID); err != nil {
			s.log.Warn("reconcile: remove compose file", "envId", envID, "err", err)
		}
	}

	if _, err := s.deps.Pool.Exec(ctx, `
		UPDATE tenant_ports p SET env_id = NULL, leased_at = NULL
		FROM environments e WHERE p.env_id = e.id AND e.status = 'destroyed'`); err != nil {
		return fmt.Errorf("release ports of destroyed tenants: %w", err)
	}
	for _, st := range []events.TenantState{events.StateProvisioning, events.StateRunning, events.StateUnhealthy, events.StateStopped, events.StateError} {
		s.metrics.tenants.WithLabelValues(string(st)).Set(counts[st])
	}
	return nil
}

// reconcileTenant applies the policy of reconcile to one tenant that is not destroyed. The
// caller holds its lock.
func (s *Service) reconcileTenant(ctx context.Context, t tenant, atStart bool) error {
	switch {
	case t.Status == events.StateDestroyed:
		return nil
	case t.Desired == desiredDestroyed:
		if !atStart && time.Since(t.UpdatedAt) < s.cfg.StuckAfter {
			return nil // Its destroy command is on the way.
		}
		s.metrics.reconcileActions.WithLabelValues(actionDestroy).Inc()
		return s.destroy(ctx, t, "")
	case t.Status == events.StateProvisioning:
		age := time.Since(t.StatusChangedAt)
		switch {
		case atStart:
			s.metrics.reconcileActions.WithLabelValues(actionResume).Inc()
			s.log.Info("resuming a spawn a previous run left unfinished", "envId", t.ID, "age", age.Round(time.Second))
			return s.provision(ctx, t, t.RequestID)
		case age >= s.cfg.StuckAfter:
			s.metrics.reconcileActions.WithLabelValues(actionFailStuck).Inc()
			return s.fail(ctx, t, t.RequestID, fmt.Sprintf("still provisioning after %s: no provisioner finished the spawn", age.Round(time.Second)))
		}
		return nil
	case watched(t):
		return s.observe(ctx, t)
	}
	return nil
}

// youngest returns the age of the most recently created object.
func youngest(objs []runtime.Object) time.Duration {
	age := time.Duration(1<<63 - 1)
	for _, o := range objs {
		age = min(age, time.Since(o.Created))
	}
	return age
}
