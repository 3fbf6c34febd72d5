package api

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/convergence-dev/convergence/internal/httpx"
	"github.com/convergence-dev/convergence/internal/telemetry"
	"github.com/convergence-dev/convergence/pkg/events"
	"github.com/convergence-dev/convergence/pkg/events/consumer"
)

// recordKey stores the digest of a tenant's key, which the API authenticates the tenant with,
// in tx. It is idempotent, never brings back a key revoked meanwhile, and records a key of a
// tenant whose destroy was asked for as revoked: the spawn or rotation that made the key records
// it at once, and the provisioner's tenant.key.issued fact records it again, maybe late, in case
// the API stopped in between.
func recordKey(ctx context.Context, tx pgx.Tx, k events.TenantKeyIssued) error {
	if err := lockTenantKeys(ctx, tx, k.EnvID); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, `
		INSERT INTO tenant_keys (digest, env_id, org_id, name, prefix, revoked_at, revoked_reason)
		SELECT $1, $2, $3, $4, $5, destroyed, CASE WHEN destroyed IS NOT NULL THEN 'destroyed' END
		FROM (SELECT max(revoked_at) AS destroyed FROM tenant_keys WHERE env_id = $2 AND revoked_reason = 'destroyed') d
		ON CONFLICT (digest) DO NOTHING`, k.KeyDigest, k.EnvID, k.OrgID, k.Name, k.KeyPrefix); err != nil {
		return fmt.Errorf("record tenant key: %w", err)
	}
	return nil
}

// lockTenantKeys takes tenant envID's key turn until tx ends, so that a key recorded while the
// tenant's destroy is asked for is revoked either way: by the destroy, or by recordKey seeing it.
func lockTenantKeys(ctx context.Context, tx pgx.Tx, envID int64) error {
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtextextended('tenant keys', $1))`, envID); err != nil {
		return fmt.Errorf("take the tenant's key turn: %w", err)
	}
	return nil
}

// tenantOrg is the organization of tenant envID, as its keys say, revoked ones included; a
// tenant the API has no key of is a 404.
func (s *Service) tenantOrg(ctx context.Context, envID int64) (int64, error) {
	var orgID int64
	err := s.deps.Pool.QueryRow(ctx, `SELECT org_id FROM tenant_keys WHERE env_id = $1 LIMIT 1`, envID).Scan(&orgID)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, httpx.NotFound(fmt.Sprintf("tenant %d", envID))
	}
	if err != nil {
		return 0, fmt.Errorf("find tenant %d: %w", envID, err)
	}
	return orgID, nil
}

// taskEnd is what the API reads of a converge.completed or converge.failed.
type taskEnd struct {
	TaskID     string    `json:"taskId"`
	FinishedAt time.Time `json:"finishedAt"`
}

// taskEnds records when the API's tasks ended, from the converger's result events, on a
// durable consumer shared by every API replica: a tenant's unfinished tasks count against its
// cap (api.converge.max-tenant-tasks).
func (s *Service) taskEnds() *consumer.Consumer[taskEnd] {
	return consumer.New(s.deps.JS, consumer.Config{
		Name:        events.ConsumerAPITaskEnds,
		Stream:      events.StreamConvergeResults,
		Subjects:    []string{events.SubjectConvergeCompleted, events.SubjectConvergeFailed},
		Concurrency: 8,
	}, func(ctx context.Context, e consumer.Event[taskEnd]) error {
		_, err := s.deps.Pool.Exec(ctx, `UPDATE tasks SET finished_at = $2 WHERE id = $1 AND finished_at IS NULL`,
			e.Data.TaskID, e.Data.FinishedAt)
		return err
	}, s.logger, telemetry.NewConsumerMetrics(s.deps.Registry))
}

// keyFacts records the keys of the provisioner's tenant.key.issued facts, on a durable consumer
// shared by every API replica.
func (s *Service) keyFacts() *consumer.Consumer[events.TenantKeyIssued] {
	return consumer.New(s.deps.JS, consumer.Config{
		Name:     events.ConsumerAPIKeys,
		Stream:   events.StreamTenantKeys,
		Subjects: []string{events.SubjectTenantKeys},
	}, func(ctx context.Context, e consumer.Event[events.TenantKeyIssued]) error {
		if len(e.Data.KeyDigest) == 0 || e.Data.EnvID <= 0 {
			return consumer.Permanent(fmt.Errorf("a key fact without a digest or tenant: %+v", e.Data))
		}
		return pgx.BeginFunc(ctx, s.deps.Pool, func(tx pgx.Tx) error { return recordKey(ctx, tx, e.Data) })
	}, s.logger, telemetry.NewConsumerMetrics(s.deps.Registry))
}
