package provisioner

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/convergence-dev/convergence/internal/outbox"
	"github.com/convergence-dev/convergence/pkg/events"
	"github.com/convergence-dev/convergence/services/provisioner/egress"
	"github.com/convergence-dev/convergence/services/provisioner/keyring"
	"github.com/convergence-dev/convergence/services/provisioner/ports"
	"github.com/convergence-dev/convergence/services/provisioner/runtime"
)

// eventSource is the CloudEvents source of the provisioner's facts.
const eventSource = "convergence/provisioner"

// Desired states an operator can ask for.
const (
	desiredRunning   = "running"
	desiredDestroyed = "destroyed"
)

// errTenantNotFound means no environment has the id.
var errTenantNotFound = errors.New("tenant not found")

func isNotFound(err error) bool { return errors.Is(err, errTenantNotFound) }

// tenant is an environments row as the provisioner sees it.
type tenant struct {
	ID              int64
	OrgID           int64
	Name            string
	Status          events.TenantState
	Desired         string
	Image           string
	Port            int // 0 when none is leased
	Limits          runtime.Limits
	Egress          egress.Class
	Generation      int64
	Health          string
	RequestID       string
	StatusChangedAt time.Time
	UpdatedAt       time.Time
	// KeyPendingSince is when a rotated key began to wait for delivery into the container
	// (see deliverKey); nil when none waits.
	KeyPendingSince *time.Time
}

// tenantColumns are the columns of environments that scanTenant reads.
const tenantColumns = `id, org_id, name, status, desired_status, coalesce(image, ''), coalesce(port, 0),
	coalesce(memory_bytes, 0), coalesce(nano_cpus, 0), coalesce(pids_limit, 0), egress, generation,
	coalesce(health, ''), coalesce(request_id, ''), status_changed_at, updated_at, key_pending_since`

// scanTenant reads a tenant from tenantColumns.
func scanTenant(row pgx.Row) (tenant, error) {
	var t tenant
	err := row.Scan(&t.ID, &t.OrgID, &t.Name, &t.Status, &t.Desired, &t.Image, &t.Port,
		&t.Limits.MemoryBytes, &t.Limits.NanoCPUs, &t.Limits.PIDs, &t.Egress, &t.Generation,
		&t.Health, &t.RequestID, &t.StatusChangedAt, &t.UpdatedAt, &t.KeyPendingSince)
	return t, err
}

// loadTenant reads one tenant; it wraps errTenantNotFound when there is none.
func (s *Service) loadTenant(ctx context.Context, id int64) (tenant, error) {
	t, err := scanTenant(s.deps.Pool.QueryRow(ctx, `SELECT `+tenantColumns+` FROM environments WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return tenant{}, fmt.Errorf("env %d: %w", id, errTenantNotFound)
	}
	if err != nil {
		return tenant{}, fmt.Errorf("load tenant %d: %w", id, err)
	}
	return t, nil
}

// loadTenants reads every tenant that is not destroyed, and those of ids whatever their state.
func (s *Service) loadTenants(ctx context.Context, ids []int64) ([]tenant, error) {
	rows, err := s.deps.Pool.Query(ctx, `
		SELECT `+tenantColumns+` FROM environments WHERE status <> 'destroyed' OR id = ANY($1) ORDER BY id`, ids)
	if err != nil {
		return nil, fmt.Errorf("load tenants: %w", err)
	}
	ts, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (tenant, error) { return scanTenant(r) })
	if err != nil {
		return nil, fmt.Errorf("load tenants: %w", err)
	}
	return ts, nil
}

// change is one update of a tenant's row, written with its lifecycle fact (when the status
// changes) in one transaction.
type change struct {
	to     events.TenantState
	reason string
	health runtime.Health // "" clears it
	// container records the container's name.
	container string
	// onlyIfWanted applies the change only while the operator still wants the tenant to run
	// at the generation seen; a destroy requested meanwhile wins.
	onlyIfWanted bool
	// releasePort frees the tenant's port; only once its container is confirmed gone.
	releasePort bool
	// archive keeps the removed container's last logs.
	archive *archive
	// requestID is the request that caused the change, carried in the fact.
	requestID string
}

// archive is a removed container's last output.
type archive struct {
	cause    string
	exitCode int
	logs     []byte
}

// errStale means the tenant's row changed since it was read; the change was not applied.
var errStale = errors.New("tenant changed meanwhile")

// apply writes c for tenant t, expecting the row still to have t's status, and publishes the
// lifecycle fact through the outbox when the status changes. It returns errStale, changing
// nothing, when the row moved on.
func (s *Service) apply(ctx context.Context, t tenant, c change) error {
	err := s.deps.Outbox.Tx(ctx, func(tx pgx.Tx) error {
		var health, reason, container any
		if c.health != "" {
			health = string(c.health)
		}
		if c.reason != "" {
			reason = truncate(c.reason, maxReasonBytes)
		}
		if c.container != "" {
			container = c.container
		}
		tag, err := tx.Exec(ctx, `
			UPDATE environments SET
				status = $2,
				health = $3,
				reason = $4,
				container_name = coalesce($5, container_name),
				status_changed_at = CASE WHEN status = $2 THEN status_changed_at ELSE now() END,
				destroyed_at = CASE WHEN $2 = 'destroyed' THEN coalesce(destroyed_at, now()) END,
				updated_at = now()
			WHERE id = $1 AND status = $6
			  AND (NOT $7 OR (desired_status = 'running' AND generation = $8))`,
			t.ID, string(c.to), health, reason, container, string(t.Status), c.onlyIfWanted, t.Generation)
		if err != nil {
			return fmt.Errorf("update tenant %d: %w", t.ID, err)
		}
		if tag.RowsAffected() == 0 {
			return errStale
		}
		if c.releasePort {
			if err := ports.Release(ctx, tx, t.ID); err != nil {
				return err
			}
		}
		if c.to == events.StateDestroyed {
			if err := keyring.Forget(ctx, tx, t.ID); err != nil {
				return err
			}
		}
		if c.archive != nil && len(c.archive.logs) > 0 {
			if _, err := tx.Exec(ctx, `INSERT INTO tenant_logs (env_id, cause, exit_code, logs) VALUES ($1, $2, $3, $4)`,
				t.ID, c.archive.cause, c.archive.exitCode, c.archive.logs); err != nil {
				return fmt.Errorf("archive logs of tenant %d: %w", t.ID, err)
			}
		}
		if c.to == t.Status {
			return nil
		}
		return writeLifecycle(ctx, tx, t, c)
	})
	if err != nil {
		return err
	}
	if c.to != t.Status {
		s.metrics.transitions.WithLabelValues(string(c.to)).Inc()
		s.log.Info("tenant state changed", "envId", t.ID, "from", t.Status, "to", c.to, "reason", c.reason, "request_id", c.requestID)
	}
	return nil
}

// writeLifecycle writes the fact that t entered c.to.
func writeLifecycle(ctx context.Context, tx pgx.Tx, t tenant, c change) error {
	fact := events.TenantLifecycle{
		EnvID:     t.ID,
		OrgID:     t.OrgID,
		Name:      t.Name,
		State:     c.to,
		PrevState: t.Status,
		Reason:    truncate(c.reason, maxReasonBytes),
		Port:      t.Port,
		At:        time.Now().UTC(),
	}
	env, err := events.NewEnvelope(eventSource, events.TypeTenantLifecycle, strconv.FormatInt(t.ID, 10), c.requestID, fact)
	if err != nil {
		return err
	}
	return outbox.Write(ctx, tx, events.LifecycleSubject(c.to, t.ID), env)
}

// maxReasonBytes bounds a stored reason; an exit error's log excerpt can be long.
const maxReasonBytes = 4 << 10

// truncate bounds s to about n bytes and makes it storable as PostgreSQL text: valid UTF-8
// without NUL bytes, which container output need not be.
func truncate(s string, n int) string {
	if len(s) > n {
		s = s[:n] + "…"
	}
	return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "")
}
