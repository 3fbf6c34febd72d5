package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/labstack/echo/v4"

	"github.com/convergence-dev/convergence/internal/httpx"
	"github.com/convergence-dev/convergence/internal/pgerr"
	contract "github.com/convergence-dev/convergence/pkg/api"
)

// maxMaxTenants bounds an organization's tenant quota, the plan's or its own.
const maxMaxTenants = 10_000

// orgRoutes registers the operators' organization endpoints.
func (s *Service) orgRoutes(admin *echo.Group) {
	admin.POST("/orgs", s.createOrg, s.audited(auditOrgCreate))
	admin.GET("/orgs", s.listOrgs)
	admin.GET("/orgs/:orgId", s.getOrg)
	admin.PATCH("/orgs/:orgId", s.updateOrg, s.audited(auditOrgUpdate))
}

// liveTenants counts organization o's tenants whose destroy has not been asked for, and
// unfinished counts the tasks t in flight: not finished, and not older than a day (record_task
// counts them alike).
const (
	liveTenants = `(SELECT count(DISTINCT k.env_id) FROM tenant_keys k WHERE k.org_id = o.id AND k.revoked_reason IS DISTINCT FROM 'destroyed')`
	unfinished  = `t.finished_at IS NULL AND t.created_at > now() - interval '1 day'`
)

// selectOrgs reads organization $1 (0: every one) with ids above $2, at most $3.
const selectOrgs = `SELECT o.id, o.name, o.plan, o.max_tenants, ` + liveTenants + `,
	(SELECT count(*) FROM tasks t WHERE t.org_id = o.id AND ` + unfinished + `),
	o.created_at, o.updated_at FROM organizations o
	WHERE ($1 = 0 OR o.id = $1) AND o.id > $2 ORDER BY o.id LIMIT $3`

// scanOrg reads a row of selectOrgs and fills in the limits of its plan in force: MaxTenants is
// the organization's tenant quota, its own (MaxTenantsOverride) if it has one, else its plan's.
// LiveTenants counts the tenants whose destroy has not been asked for; TasksInFlight its
// tenants' unfinished tasks.
func (s *Service) scanOrg(row pgx.Row) (contract.Org, error) {
	var v contract.Org
	err := row.Scan(&v.OrgID, &v.Name, &v.Plan, &v.MaxTenantsOverride, &v.LiveTenants, &v.TasksInFlight, &v.CreatedAt, &v.UpdatedAt)
	limits := s.orgLimits(v.Plan, v.MaxTenantsOverride)
	v.Limits, v.MaxTenants = limits.view(), limits.MaxTenants
	return v, err
}

// orgOf returns organization orgID (0: the default one) and its limits, or a 404.
func (s *Service) orgOf(ctx context.Context, orgID int64) (int64, planLimits, error) {
	var plan string
	var maxTenants *int
	err := s.deps.Pool.QueryRow(ctx, `
		SELECT id, plan, max_tenants FROM organizations WHERE CASE WHEN $1 = 0 THEN name = 'default' ELSE id = $1 END`, orgID).
		Scan(&orgID, &plan, &maxTenants)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, planLimits{}, httpx.NotFound(fmt.Sprintf("organization %d (list them with GET /api/v1/orgs)", orgID))
	}
	if err != nil {
		return 0, planLimits{}, fmt.Errorf("read organization: %w", err)
	}
	return orgID, s.orgLimits(plan, maxTenants), nil
}

// orgLimits are the limits of an organization on plan with its own tenant quota (nil: none).
func (s *Service) orgLimits(plan string, maxTenants *int) planLimits {
	l := s.plans.limits(plan)
	if maxTenants != nil {
		l.MaxTenants = *maxTenants
	}
	return l
}

// me answers GET /api/v1/me: who the caller is, its organization's plan and limits, and what it
// uses of them: its organization's live tenants and its own tasks in flight.
func (s *Service) me(c echo.Context) error {
	t := tenantOf(c)
	var maxTenants *int
	var tenants, tasks int
	err := s.deps.Pool.QueryRow(c.Request().Context(), `SELECT o.max_tenants, `+liveTenants+`,
		(SELECT count(*) FROM tasks t WHERE t.env_id = $2 AND `+unfinished+`)
		FROM organizations o WHERE o.id = $1`, t.OrgID, t.EnvID).Scan(&maxTenants, &tenants, &tasks)
	if err != nil {
		return fmt.Errorf("read the tenant's organization: %w", err)
	}
	me := contract.Me{Success: true, Role: contract.MeRoleTenant, EnvID: t.EnvID, OrgID: t.OrgID, Name: t.Name,
		KeyID: t.KeyID, KeyExpiresAt: t.KeyExpiresAt, Plan: t.Plan, Limits: s.orgLimits(t.Plan, maxTenants).view()}
	me.Used.Tenants, me.Used.TasksInFlight = tenants, tasks
	return c.JSON(http.StatusOK, me)
}

// createOrg creates an organization: 201 with it, 409 when the name is taken.
func (s *Service) createOrg(c echo.Context) error {
	ctx := c.Request().Context()
	var req contract.CreateOrgJSONBody // MaxTenants, when given, is its own quota in place of its plan's.
	if err := decodeBody(c, &req); err != nil {
		return err
	}
	var problems []string
	if !dnsLabel.MatchString(req.Name) {
		problems = append(problems, fmt.Sprintf("name %q is not valid: use %s", req.Name, validNameHelp))
	}
	if req.Plan == "" {
		req.Plan = freePlan
	}
	problems = append(problems, s.checkOrg(&req.Plan, req.MaxTenants)...)
	if len(problems) > 0 {
		return httpx.BadRequest("%s", strings.Join(problems, "; "))
	}
	key, err := idempotencyOf(c, req)
	if err != nil {
		return err
	}
	for attempt := 0; ; attempt++ {
		if key != nil {
			if replayed, err := s.replayOperator(c, opCreateOrg, key); replayed || err != nil {
				return err
			}
		}
		var created contract.Org
		err = pgx.BeginFunc(ctx, s.deps.Pool, func(tx pgx.Tx) error {
			if key != nil {
				if err := claimOperatorKey(ctx, tx, opCreateOrg, key, nil); err != nil {
					return err
				}
			}
			var err error
			created, err = s.scanOrg(tx.QueryRow(ctx, `
				WITH o AS (INSERT INTO organizations (name, plan, max_tenants) VALUES ($1, $2, $3)
					RETURNING id, name, plan, max_tenants, created_at, updated_at)
				SELECT id, name, plan, max_tenants, 0, 0, created_at, updated_at FROM o`, req.Name, req.Plan, req.MaxTenants))
			if pgerr.IsUniqueViolation(err, "organizations_name_key") {
				return httpx.Conflict("an organization named %q already exists; pick another name", req.Name)
			}
			if err != nil {
				return fmt.Errorf("create organization: %w", err)
			}
			noteAudit(c, auditFacts{OrgID: created.OrgID})
			if key == nil {
				return nil
			}
			return keepOperatorAnswer(ctx, tx, opCreateOrg, key, http.StatusCreated, orgAnswer(created))
		})
		if errors.Is(err, errIdempotencyKeyTaken) {
			if attempt == 0 {
				continue // A concurrent request under the key made it: answer with its answer.
			}
			return httpx.Conflict("a request under %s %q is still in progress; retry it shortly", idempotencyHeader, key.key)
		}
		if err != nil {
			return err
		}
		s.logger.Info("organization created", "orgId", created.OrgID, "name", created.Name, "request_id", httpx.RequestID(c))
		return c.JSON(http.StatusCreated, orgAnswer(created))
	}
}

// opCreateOrg names organization creates among the operators' idempotent requests.
const opCreateOrg = "org.create"

func orgAnswer(v contract.Org) map[string]any {
	return map[string]any{"success": true, "organization": v}
}

// checkOrg says what is wrong with a plan and a tenant quota; nil ones are not checked.
func (s *Service) checkOrg(plan *string, maxTenants *int) []string {
	var problems []string
	if plan != nil {
		if problem := s.plans.check(*plan); problem != "" {
			problems = append(problems, problem)
		}
	}
	if maxTenants != nil && (*maxTenants < 0 || *maxTenants > maxMaxTenants) {
		problems = append(problems, fmt.Sprintf("maxTenants %d is out of range: use 0 to %d, or leave it out for the plan's", *maxTenants, maxMaxTenants))
	}
	return problems
}

// updateOrg changes an organization's plan or tenant quota. A quota below its live tenants
// stops new spawns and leaves the tenants running; the answer says so.
func (s *Service) updateOrg(c echo.Context) error {
	id, err := orgIDParam(c)
	if err != nil {
		return err
	}
	// The fields to change; a maxTenants of null drops the organization's own tenant quota, so
	// its plan's applies.
	var req contract.UpdateOrgJSONBody
	if err := decodeBody(c, &req); err != nil {
		return err
	}
	setQuota := req.MaxTenants != nil
	var quota *int
	if setQuota && string(req.MaxTenants) != "null" {
		quota = new(int)
		if err := json.Unmarshal(req.MaxTenants, quota); err != nil {
			return httpx.BadRequest("maxTenants %s is not valid: give a whole number, or null for the plan's quota", req.MaxTenants)
		}
	}
	problems := s.checkOrg(req.Plan, quota)
	if req.Plan == nil && !setQuota {
		problems = append(problems, "nothing to change: give plan, maxTenants (null for the plan's) or both")
	}
	if len(problems) > 0 {
		return httpx.BadRequest("%s", strings.Join(problems, "; "))
	}
	ctx := c.Request().Context()
	tag, err := s.deps.Pool.Exec(ctx, `
		UPDATE organizations SET plan = coalesce($2, plan),
			max_tenants = CASE WHEN $3 THEN $4 ELSE max_tenants END, updated_at = now()
		WHERE id = $1`, id, req.Plan, setQuota, quota)
	if err != nil {
		return fmt.Errorf("update organization: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return httpx.NotFound(fmt.Sprintf("organization %d (list them with GET /api/v1/orgs)", id))
	}
	v, err := s.scanOrg(s.deps.Pool.QueryRow(ctx, selectOrgs, id, 0, 1))
	if err != nil {
		return fmt.Errorf("read organization: %w", err)
	}
	s.logger.Info("organization updated", "orgId", id, "plan", v.Plan, "maxTenants", v.MaxTenants, "request_id", httpx.RequestID(c))
	body := orgAnswer(v)
	if v.LiveTenants > v.MaxTenants {
		body["message"] = fmt.Sprintf("organization %d has %d live tenants, more than its new quota of %d: they go on running, and new spawns are refused until it is under the quota",
			id, v.LiveTenants, v.MaxTenants)
	}
	return c.JSON(http.StatusOK, body)
}

// listOrgs answers organizations, oldest first, a page of ?limit= at a time; nextCursor, when
// set, is the ?cursor= of the next page.
func (s *Service) listOrgs(c echo.Context) error {
	limit, after, err := pageParams(c)
	if err != nil {
		return err
	}
	rows, err := s.deps.Pool.Query(c.Request().Context(), selectOrgs, 0, after, limit+1)
	if err != nil {
		return fmt.Errorf("list organizations: %w", err)
	}
	orgs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (contract.Org, error) { return s.scanOrg(r) })
	if err != nil {
		return fmt.Errorf("list organizations: %w", err)
	}
	orgs, next := pageOf(orgs, limit, func(o contract.Org) int64 { return o.OrgID })
	return c.JSON(http.StatusOK, contract.OrgList{Success: true, Organizations: orgs, NextCursor: next})
}

// orgIDParam reads the :orgId of the path.
func orgIDParam(c echo.Context) (int64, error) {
	raw := c.Param("orgId")
	id, err := strconv.ParseInt(raw, 10, 64)
	if err != nil || id <= 0 {
		return 0, httpx.BadRequest("orgId %q is not valid: use the positive integer id of an organization (GET /api/v1/orgs)", raw)
	}
	return id, nil
}

// getOrg answers one organization.
func (s *Service) getOrg(c echo.Context) error {
	id, err := orgIDParam(c)
	if err != nil {
		return err
	}
	v, err := s.scanOrg(s.deps.Pool.QueryRow(c.Request().Context(), selectOrgs, id, 0, 1))
	if errors.Is(err, pgx.ErrNoRows) {
		return httpx.NotFound(fmt.Sprintf("organization %d", id))
	}
	if err != nil {
		return fmt.Errorf("read organization: %w", err)
	}
	return c.JSON(http.StatusOK, orgAnswer(v))
}
