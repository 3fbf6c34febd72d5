package provisioner

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/convergence-dev/convergence/pkg/events"
	"github.com/convergence-dev/convergence/services/provisioner/keyring"
	"github.com/convergence-dev/convergence/services/provisioner/ports"
	"github.com/convergence-dev/convergence/services/provisioner/runtime"
)

// portAttempts bounds how often one spawn moves its tenant to another port because something
// outside the platform holds the leased one.
const portAttempts = 3

// cleanupTimeout bounds the removal of a failed tenant's container, which runs even when the
// spawn ran out of time.
const cleanupTimeout = time.Minute

// Environment variables every tenant gets. The API key itself is a file (apiKeyFile in
// runtime.SecretsDir), whose path EnvAPIKeyFile holds.
const (
	EnvAPIURL     = "CONVERGENCE_API_URL"
	EnvAPIKeyFile = "CONVERGENCE_API_KEY_FILE"
	EnvEnvID      = "CONVERGENCE_ENV_ID"
	EnvOrgID      = "CONVERGENCE_ORG_ID"
)

// apiKeyFile is the name of the tenant's API key file.
const apiKeyFile = "api-key"

// provision brings tenant t to a running, healthy container: a new tenant (provisioning), one
// a previous run left half made, or a running tenant whose container went missing. It returns
// nil once the outcome is recorded, running or error, and an error only when trying again may
// help (the engine or database failing), having left nothing behind that a retry cannot reuse.
func (s *Service) provision(ctx context.Context, t tenant, requestID string) error {
	started := time.Now()
	ctx, cancel := context.WithTimeout(ctx, s.cfg.SpawnTimeout)
	defer cancel()
	log := s.log.With("envId", t.ID, "request_id", requestID)

	apiKey, err := s.keys.OpenFor(ctx, s.deps.Pool, t.ID)
	if errors.Is(err, keyring.ErrNotSealed) {
		return s.fail(ctx, t, requestID, "the tenant's API key is not sealed to this provisioner's key (was its key file replaced?); destroy the tenant and spawn it again")
	}
	if err != nil {
		return err
	}

	failed := func(err error) error {
		if err := s.spawnFailed(ctx, t, requestID, err); err != nil {
			return err
		}
		s.metrics.spawnSeconds.WithLabelValues("error").Observe(time.Since(started).Seconds())
		return nil
	}
	spec, err := s.ensure(ctx, &t, apiKey)
	if err != nil {
		return failed(err)
	}
	if s.hooks.afterEnsure != nil {
		s.hooks.afterEnsure(t.ID)
	}

	wctx, wcancel := context.WithTimeout(ctx, s.cfg.HealthTimeout)
	err = s.rt.WaitHealthy(wctx, t.ID, spec.HostPort)
	wcancel()
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
			err = fmt.Errorf("no answer 200 on GET /health within %s: %w", s.cfg.HealthTimeout, err)
		}
		return failed(err)
	}

	// GET /health answered, which is what healthy means here; the image's own check, if it
	// has one, is still in its start period and the health watcher follows it from now on.
	name := s.rt.ContainerName(t.ID)
	err = s.apply(ctx, t, change{to: events.StateRunning, health: runtime.HealthHealthy, container: name, onlyIfWanted: true, requestID: requestID})
	if errors.Is(err, errStale) {
		// A destroy was requested meanwhile, or another replica got there first; either
		// leaves the container to whoever now owns the tenant.
		return nil
	}
	if err != nil {
		return err
	}
	s.metrics.spawnSeconds.WithLabelValues("running").Observe(time.Since(started).Seconds())
	log.Info("tenant running", "port", spec.HostPort, "container", name, "took", time.Since(started).Round(time.Millisecond))
	return nil
}

// ensure makes the tenant's container exist and run on a port nobody else holds, writing its
// compose file first. When something outside the platform holds the leased port (the probe
// before a new container, or the engine at start), the tenant moves to another port.
func (s *Service) ensure(ctx context.Context, t *tenant, apiKey string) (runtime.Spec, error) {
	for attempt := 1; ; attempt++ {
		if t.Port == 0 {
			if err := pgx.BeginFunc(ctx, s.deps.Pool, func(tx pgx.Tx) (err error) {
				t.Port, err = ports.Lease(ctx, tx, t.ID)
				return err
			}); err != nil {
				return runtime.Spec{}, err
			}
		}
		spec := s.spec(*t, apiKey)
		busy := ports.Probe(ctx, s.hostIP(), t.Port)
		if busy != nil {
			// The tenant's own container (from an earlier attempt) holds it legitimately.
			st, err := s.rt.Inspect(ctx, t.ID)
			if err != nil {
				return runtime.Spec{}, err
			}
			if st.State != runtime.StateMissing && st.HostPort == t.Port {
				busy = nil
			}
		}
		if busy == nil {
			if err := s.writeComposeFile(spec); err != nil {
				return runtime.Spec{}, err
			}
			_, err := s.rt.Ensure(ctx, spec)
			if !errors.Is(err, runtime.ErrPortUnavailable) {
				return spec, err
			}
			busy = err
		}
		if attempt == portAttempts {
			return runtime.Spec{}, fmt.Errorf("%w: %d ports in a row were taken by something else; last: %w", runtime.ErrPortUnavailable, portAttempts, busy)
		}
		old := t.Port
		if err := pgx.BeginFunc(ctx, s.deps.Pool, func(tx pgx.Tx) (err error) {
			t.Port, err = ports.Move(ctx, tx, t.ID, s.cfg.PortQuarantine)
			return err
		}); err != nil {
			return runtime.Spec{}, err
		}
		s.log.Warn("tenant port held by something else; moved the tenant", "envId", t.ID, "from", old, "to", t.Port, "cause", busy)
	}
}

// spec is what the tenant's container runs.
func (s *Service) spec(t tenant, apiKey string) runtime.Spec {
	return runtime.Spec{
		EnvID:    t.ID,
		OrgID:    t.OrgID,
		Name:     t.Name,
		Image:    t.Image,
		HostPort: t.Port,
		Env: map[string]string{
			EnvAPIURL:     s.cfg.TenantAPIURL,
			EnvAPIKeyFile: runtime.SecretsDir + "/" + apiKeyFile,
			EnvEnvID:      strconv.FormatInt(t.ID, 10),
			EnvOrgID:      strconv.FormatInt(t.OrgID, 10),
		},
		// The key as a file, never in the environment (which `docker inspect` shows and
		// child processes inherit).
		Secrets:    map[string]string{apiKeyFile: apiKey},
		Limits:     t.Limits,
		Egress:     t.Egress,
		Generation: t.Generation,
	}
}

func (s *Service) hostIP() string {
	if s.cfg.Runtime.HostIP == "" {
		return runtime.DefaultHostIP
	}
	return s.cfg.Runtime.HostIP
}

// spawnFailed decides what a failed spawn step means: an error that retrying may cure (the
// engine or database failing, with time left) is returned for a retry; anything else fails
// the tenant. Work cut short by the caller (shutdown, or a destroy interrupting the spawn)
// is returned as is, for the caller to judge.
func (s *Service) spawnFailed(ctx context.Context, t tenant, requestID string, err error) error {
	if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.DeadlineExceeded) {
		return err
	}
	if retryable(err) && ctx.Err() == nil {
		return err
	}
	if ctx.Err() != nil && !errors.Is(err, context.DeadlineExceeded) {
		err = fmt.Errorf("spawn did not finish within %s: %w", s.cfg.SpawnTimeout, err)
	}
	return s.fail(ctx, t, requestID, err.Error())
}

// retryable reports whether a spawn error may go away by itself. What the tenant's image or
// spec, the host's capacity, or the tenant's own app caused will not.
func retryable(err error) bool {
	var exit *runtime.ExitError
	switch {
	case errors.As(err, &exit),
		errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, runtime.ErrImageNotFound),
		errors.Is(err, runtime.ErrInvalidSpec),
		errors.Is(err, runtime.ErrHardeningNotApplied),
		errors.Is(err, runtime.ErrPortUnavailable),
		errors.Is(err, runtime.ErrNoSubnet),
		errors.Is(err, runtime.ErrNotManaged),
		errors.Is(err, runtime.ErrNotFound),
		errors.Is(err, ports.ErrNoFreePort):
		return false
	}
	return true
}

// fail moves tenant t to error with reason, leaving nothing behind: its container and network
// are removed (their last logs archived), and only once they are confirmed gone are its port
// and compose file released. It runs on its own deadline, since a spawn that ran out of time
// still has to clean up. It returns an error only when the removal failed, for a retry.
func (s *Service) fail(ctx context.Context, t tenant, requestID, reason string) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	removal, err := s.rt.Remove(ctx, t.ID, 0)
	if err != nil {
		return fmt.Errorf("remove the failed tenant's container: %w", err)
	}
	if err := s.removeComposeFile(t.ID); err != nil {
		return err
	}
	c := change{to: events.StateError, reason: reason, releasePort: true, requestID: requestID}
	if removal.Existed {
		c.archive = &archive{cause: "spawn_failed", exitCode: removal.ExitCode, logs: removal.LastLogs}
	}
	if err := s.apply(ctx, t, c); err != nil && !errors.Is(err, errStale) {
		return err
	}
	s.log.Warn("tenant failed", "envId", t.ID, "reason", reason, "request_id", requestID)
	return nil
}
