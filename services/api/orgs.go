package api

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/labstack/echo/v4"

	"github.com/convergence-dev/convergence/internal/httpx"
	"github.com/convergence-dev/convergence/internal/pgerr"
)

// Organization plans, and the tenant quota a new organization gets by default.
var plans = []string{"free", "pro", "enterprise"}

const (
	defaultMaxTenants = 100
	maxMaxTenants     = 10_000
)

// orgRoutes registers the operators' organization endpoints.
func (s *Service) orgRoutes(admin *echo.Group) {
	admin.POST("/orgs", s.createOrg, s.audited(auditOrgCreate))
	admin.GET("/orgs", s.listOrgs)
	admin.GET("/orgs/:orgId", s.getOrg)
	admin.PATCH("/orgs/:orgId", s.updateOrg, s.audited(auditOrgUpdate))
}

// orgView is an organization as the API shows it. LiveTenants counts the tenants whose destroy
// has not been asked for.
type orgView struct {
	OrgID       int64     `json:"orgId"`
	Name        string    `json:"name"`
	Plan        string    `json:"plan"`
	MaxTenants  int       `json:"maxTenants"`
	LiveTenants int       `json:"liveTenants"`
	CreatedAt   time.Time `json:"createdAt"`
	UpdatedAt   time.Time `json:"updatedAt"`
}

// selectOrgs reads organization $1 (0: every one) with ids above $2, at most $3.
const selectOrgs = `SELECT o.id, o.name, o.plan, o.max_tenants,
	(SELECT count(DISTINCT k.env_id) FROM tenant_keys k WHERE k.org_id = o.id AND k.revoked_reason IS DISTINCT FROM 'destroyed'),
	o.created_at, o.updated_at FROM organizations o
	WHERE ($1 = 0 OR o.id = $1) AND o.id > $2 ORDER BY o.id LIMIT $3`

func scanOrg(row pgx.Row) (orgView, error) {
	var v orgView
	err := row.Scan(&v.OrgID, &v.Name, &v.Plan, &v.MaxTenants, &v.LiveTenants, &v.CreatedAt, &v.UpdatedAt)
	return v, err
}

// createOrgRequest is the body of POST /orgs.
type createOrgRequest struct {
	Name       string `json:"name"`
	Plan       string `json:"plan"`
	MaxTenants *int   `json:"maxTenants"`
}

// createOrg creates an organization: 201 with it, 409 when the name is taken.
func (s *Service) createOrg(c echo.Context) error {
	ctx := c.Request().Context()
	var req createOrgRequest
	if err := decodeBody(c, &req); err != nil {
		return err
	}
	var problems []string
	if !dnsLabel.MatchString(req.Name) {
		problems = append(problems, fmt.Sprintf("name %q is not valid: use %s", req.Name, validNameHelp))
	}
	if req.Plan == "" {
		req.Plan = plans[0]
	}
	maxTenants := defaultMaxTenants
	if req.MaxTenants != nil {
		maxTenants = *req.MaxTenants
	}
	problems = append(problems, checkOrgLimits(&req.Plan, &maxTenants)...)
	if len(problems) > 0 {
		return httpx.BadRequest("%s", strings.Join(problems, "; "))
	}
	req.MaxTenants = &maxTenants
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
		var created orgView
		err = pgx.BeginFunc(ctx, s.deps.Pool, func(tx pgx.Tx) error {
			if key != nil {
				if err := claimOperatorKey(ctx, tx, opCreateOrg, key); err != nil {
					return err
				}
			}
			var err error
			created, err = scanOrg(tx.QueryRow(ctx, `
				WITH o AS (INSERT INTO organizations (name, plan, max_tenants) VALUES ($1, $2, $3)
					RETURNING id, name, plan, max_tenants, created_at, updated_at)
				SELECT id, name, plan, max_tenants, 0, created_at, updated_at FROM o`, req.Name, req.Plan, maxTenants))
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

func orgAnswer(v orgView) map[string]any { return map[string]any{"success": true, "organization": v} }

// checkOrgLimits says what is wrong with a plan and a tenant quota; nil ones are not checked.
func checkOrgLimits(plan *string, maxTenants *int) []string {
	var problems []string
	if plan != nil && !slices.Contains(plans, *plan) {
		problems = append(problems, fmt.Sprintf("plan %q is not valid: use one of %s (default %s)", *plan, strings.Join(plans, ", "), plans[0]))
	}
	if maxTenants != nil && (*maxTenants < 0 || *maxTenants > maxMaxTenants) {
		problems = append(problems, fmt.Sprintf("maxTenants %d is out of range: use 0 to %d (default %d)", *maxTenants, maxMaxTenants, defaultMaxTenants))
	}
	return problems
}

// updateOrgRequest is the body of PATCH /orgs/:orgId: the fields to change.
type updateOrgRequest struct {
	Plan       *string `json:"plan"`
	MaxTenants *int    `json:"maxTenants"`
}

// updateOrg changes an organization's plan or tenant quota. A quota below its live tenants
// stops new spawns and leaves the tenants running; the answer says so.
func (s *Service) updateOrg(c echo.Context) error {
	id, err := orgIDParam(c)
	if err != nil {
		return err
	}
	var req updateOrgRequest
	if err := decodeBody(c, &req); err != nil {
		return err
	}
	problems := checkOrgLimits(req.Plan, req.MaxTenants)
	if req.Plan == nil && req.MaxTenants == nil {
		problems = append(problems, "nothing to change: give plan, maxTenants or both")
	}
	if len(problems) > 0 {
		return httpx.BadRequest("%s", strings.Join(problems, "; "))
	}
	ctx := c.Request().Context()
	tag, err := s.deps.Pool.Exec(ctx, `
		UPDATE organizations SET plan = coalesce($2, plan), max_tenants = coalesce($3, max_tenants), updated_at = now()
		WHERE id = $1`, id, req.Plan, req.MaxTenants)
	if err != nil {
		return fmt.Errorf("update organization: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return httpx.NotFound(fmt.Sprintf("organization %d (list them with GET /api/v1/orgs)", id))
	}
	v, err := scanOrg(s.deps.Pool.QueryRow(ctx, selectOrgs, id, 0, 1))
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
	orgs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (orgView, error) { return scanOrg(r) })
	if err != nil {
		return fmt.Errorf("list organizations: %w", err)
	}
	return page(c, "organizations", orgs, limit, func(o orgView) int64 { return o.OrgID })
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
	v, err := scanOrg(s.deps.Pool.QueryRow(c.Request().Context(), selectOrgs, id, 0, 1))
	if errors.Is(err, pgx.ErrNoRows) {
		return httpx.NotFound(fmt.Sprintf("organization %d", id))
	}
	if err != nil {
		return fmt.Errorf("read organization: %w", err)
	}
	return c.JSON(http.StatusOK, orgAnswer(v))
}
