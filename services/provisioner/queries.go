package provisioner

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/convergence-dev/convergence/internal/apikey"
	"github.com/convergence-dev/convergence/internal/natsrpc"
	"github.com/convergence-dev/convergence/internal/outbox"
	"github.com/convergence-dev/convergence/internal/pgerr"
	"github.com/convergence-dev/convergence/pkg/events"
	"github.com/convergence-dev/convergence/services/provisioner/keyring"
	"github.com/convergence-dev/convergence/services/provisioner/ports"
	tenanttemplates "github.com/convergence-dev/convergence/tenant-templates"
)

// queryTimeout bounds the answer to one question about tenants, an admission included.
const queryTimeout = 15 * time.Second

// queryServer answers the questions other services ask the provisioner on the bus (the API's
// tenant endpoints) until ctx is done.
func (s *Service) queryServer() *natsrpc.Server {
	srv := natsrpc.NewServer(s.deps.NC, "provisioner", s.log)
	natsrpc.Handle(srv, events.SubjectTenantAdmit, queryTimeout, s.admit)
	natsrpc.Handle(srv, events.SubjectTenantGet, queryTimeout, s.tenantView)
	natsrpc.Handle(srv, events.SubjectTenantList, queryTimeout, s.tenantList)
	natsrpc.Handle(srv, events.SubjectTenantArchive, queryTimeout, s.archive)
	natsrpc.Handle(srv, events.SubjectKeyRotate, queryTimeout, s.rotateKey)
	natsrpc.Handle(srv, events.SubjectKeyDeliver, queryTimeout, s.deliverKeyNow)
	natsrpc.Handle(srv, events.SubjectTemplates, queryTimeout, s.templates)
	return srv
}

// templates answers the catalog of tenant templates, each with whether its image is on the
// Docker host this provisioner drives.
func (s *Service) templates(ctx context.Context, _ events.TemplatesQuery) (events.Templates, error) {
	def := tenanttemplates.DefaultTemplate()
	var out events.Templates
	for _, t := range tenanttemplates.Templates() {
		info := events.TemplateInfo{Language: t.Language, Framework: t.Framework, Image: t.Image, Default: t == def, Available: true}
		if err := s.rt.CheckImage(ctx, t.Image); err != nil {
			info.Available, info.Reason = false, err.Error()
		}
		out.Templates = append(out.Templates, info)
	}
	return out, nil
}

// admit admits a tenant: in one transaction, taken in turns per organization so its quota is
// exact, it records the tenant as provisioning with the lowest free port and a new API key
// (its digest, and the key sealed to this provisioner's keys for the container), and writes
// the tenant.spawn command, the fact of the key's digest (for the API, which authenticates with
// it) and the provisioning fact. The key goes back sealed to the asker's
// reply key.
func (s *Service) admit(ctx context.Context, r events.TenantAdmission) (events.TenantAdmitted, error) {
	if r.OrgID <= 0 || r.Name == "" || r.Image == "" || len(r.ReplyKey) == 0 {
		return events.TenantAdmitted{}, natsrpc.Errorf(natsrpc.CodeInvalid, "an admission names an organization, a name, an image and a reply key")
	}
	egress, err := events.ParseEgress(r.Egress)
	if err != nil {
		return events.TenantAdmitted{}, natsrpc.Errorf(natsrpc.CodeInvalid, "%v", err)
	}
	key, digest := apikey.New()
	var language, framework *string
	if r.Language != "" {
		language, framework = &r.Language, &r.Framework
	}
	var envID int64
	err = s.deps.Outbox.Tx(ctx, func(tx pgx.Tx) error {
		// The turn is taken before the count, whose snapshot then sees the admissions of the
		// transactions that had it before.
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtextextended('tenant admission', $1))`, r.OrgID); err != nil {
			return fmt.Errorf("take the organization's admission turn: %w", err)
		}
		var live int
		err := tx.QueryRow(ctx, `SELECT count(*) FROM environments WHERE org_id = $1 AND status <> 'destroyed'`, r.OrgID).Scan(&live)
		if err != nil {
			return fmt.Errorf("count tenants: %w", err)
		}
		if live >= r.MaxTenants {
			return &natsrpc.Error{Code: natsrpc.CodeConflict, Reason: events.ReasonTenantLimit,
				Message: fmt.Sprintf("organization %d has %d live tenants, its limit; destroy one first", r.OrgID, live)}
		}
		err = tx.QueryRow(ctx, `
			INSERT INTO environments (org_id, name, status, desired_status, language, framework, image,
				memory_bytes, nano_cpus, pids_limit, egress, api_key_hash, api_key_prefix, request_id)
			VALUES ($1, $2, 'provisioning', 'running', $3, $4, $5, $6, $7, $8, $9, $10, $11, NULLIF($12, ''))
			RETURNING id`,
			r.OrgID, r.Name, language, framework, r.Image, r.Limits.MemoryBytes, r.Limits.NanoCPUs, r.Limits.PIDs,
			egress, digest, apikey.Display(key), r.RequestID).Scan(&envID)
		if pgerr.IsUniqueViolation(err, "environments_live_name") {
			return &natsrpc.Error{Code: natsrpc.CodeConflict, Reason: events.ReasonNameTaken,
				Message: fmt.Sprintf("a tenant named %q already exists in organization %d; pick another name, or destroy that tenant first", r.Name, r.OrgID)}
		}
		if err != nil {
			return fmt.Errorf("insert tenant: %w", err)
		}
		port, err := ports.Lease(ctx, tx, envID)
		if errors.Is(err, ports.ErrNoFreePort) {
			return &natsrpc.Error{Code: natsrpc.CodeUnavailable, Reason: events.ReasonNoFreePort,
				Message: "every tenant port is in use; destroy a tenant, or widen the provisioner's port range (-provisioner.ports)"}
		}
		if err != nil {
			return err
		}
		if err := keyring.Seal(ctx, tx, envID, key); err != nil {
			return err
		}
		cmd := events.TenantSpawn{EnvID: envID, OrgID: r.OrgID, Name: r.Name, Image: r.Image, Port: port, Generation: 1, Limits: r.Limits, Egress: egress}
		if err := writeEvent(ctx, tx, events.SubjectTenantSpawn, events.TypeTenantSpawn, envID, r.RequestID, cmd); err != nil {
			return err
		}
		now := time.Now().UTC()
		issued := events.TenantKeyIssued{EnvID: envID, OrgID: r.OrgID, Name: r.Name, KeyDigest: digest, KeyPrefix: apikey.Display(key), IssuedAt: now}
		if err := writeEvent(ctx, tx, events.KeyIssuedSubject(envID), events.TypeTenantKeyIssued, envID, r.RequestID, issued); err != nil {
			return err
		}
		fact := events.TenantLifecycle{EnvID: envID, OrgID: r.OrgID, Name: r.Name, State: events.StateProvisioning, Port: port, At: now}
		return writeEvent(ctx, tx, events.LifecycleSubject(events.StateProvisioning, envID), events.TypeTenantLifecycle, envID, r.RequestID, fact)
	})
	if err != nil {
		return events.TenantAdmitted{}, err
	}
	sealed, err := apikey.SealTo(r.ReplyKey, envID, key)
	if err != nil {
		return events.TenantAdmitted{}, natsrpc.Errorf(natsrpc.CodeInvalid, "%v", err)
	}
	view, err := s.tenantView(ctx, events.TenantQuery{EnvID: envID})
	if err != nil {
		return events.TenantAdmitted{}, err
	}
	s.log.InfoContext(ctx, "tenant admitted", "envId", envID, "orgId", r.OrgID, "name", r.Name, "image", r.Image,
		"apiKey", apikey.Display(key), "request_id", r.RequestID)
	return events.TenantAdmitted{Tenant: view, SealedKey: sealed}, nil
}

// writeEvent writes one event about tenant envID to the outbox, in tx.
func writeEvent(ctx context.Context, tx pgx.Tx, subject, typ string, envID int64, requestID string, data any) error {
	env, err := events.NewEnvelope(eventSource, typ, strconv.FormatInt(envID, 10), requestID, data)
	if err != nil {
		return err
	}
	return outbox.Write(ctx, tx, subject, env)
}

// tenantView answers a TenantQuery.
func (s *Service) tenantView(ctx context.Context, q events.TenantQuery) (events.TenantView, error) {
	v, err := scanView(s.deps.Pool.QueryRow(ctx, `SELECT `+viewColumns+` FROM environments WHERE id = $1`, q.EnvID))
	if errors.Is(err, pgx.ErrNoRows) {
		return v, natsrpc.Errorf(natsrpc.CodeNotFound, "tenant %d", q.EnvID)
	}
	if err != nil {
		return v, fmt.Errorf("load tenant %d: %w", q.EnvID, err)
	}
	return v, nil
}

// tenantList answers a TenantListQuery.
func (s *Service) tenantList(ctx context.Context, q events.TenantListQuery) (events.TenantList, error) {
	if q.Limit < 1 || q.Limit > 1000 {
		return events.TenantList{}, natsrpc.Errorf(natsrpc.CodeInvalid, "limit %d: use 1 to 1000", q.Limit)
	}
	rows, err := s.deps.Pool.Query(ctx, `
		SELECT `+viewColumns+`
		FROM environments
		WHERE ($1 = 0 OR org_id = $1) AND status = ANY($2) AND ($3 = 0 OR id < $3)
		ORDER BY id DESC LIMIT $4`, q.OrgID, q.Statuses, q.Before, q.Limit+1)
	if err != nil {
		return events.TenantList{}, fmt.Errorf("list tenants: %w", err)
	}
	views, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (events.TenantView, error) { return scanView(r) })
	if err != nil {
		return events.TenantList{}, fmt.Errorf("list tenants: %w", err)
	}
	out := events.TenantList{Tenants: views}
	if len(views) > q.Limit {
		out.Tenants, out.More = views[:q.Limit], true
	}
	return out, nil
}

// viewColumns are the columns of environments that scanView reads, in its order.
const viewColumns = `id, org_id, name, status, desired_status, health, reason, port, coalesce(api_key_prefix, ''),
	language, framework, coalesce(image, ''), coalesce(memory_bytes, 0), coalesce(nano_cpus, 0),
	coalesce(pids_limit, 0), egress, generation, container_name, created_at, updated_at, status_changed_at, destroyed_at`

// scanView reads a row of viewColumns.
func scanView(row pgx.Row) (events.TenantView, error) {
	var v events.TenantView
	var mem, nano int64
	err := row.Scan(&v.EnvID, &v.OrgID, &v.Name, &v.Status, &v.DesiredStatus, &v.Health, &v.Reason, &v.Port,
		&v.APIKeyPrefix, &v.Language, &v.Framework, &v.Image, &mem, &nano, &v.Limits.PIDs, &v.Egress, &v.Generation,
		&v.ContainerName, &v.CreatedAt, &v.UpdatedAt, &v.StatusChangedAt, &v.DestroyedAt)
	v.Limits.MemoryMB = mem >> 20
	v.Limits.CPUs = float64(nano) / 1e9
	return v, err
}

// archive answers an ArchiveQuery.
func (s *Service) archive(ctx context.Context, q events.ArchiveQuery) (events.Archive, error) {
	var a events.Archive
	err := s.deps.Pool.QueryRow(ctx, `SELECT logs FROM tenant_logs WHERE env_id = $1 ORDER BY id DESC LIMIT 1`, q.EnvID).Scan(&a.Logs)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return a, fmt.Errorf("read archived logs: %w", err)
	}
	return a, nil
}
