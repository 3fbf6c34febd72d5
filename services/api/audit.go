package api

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/labstack/echo/v4"

	"github.com/convergence-dev/convergence/internal/httpx"
	contract "github.com/convergence-dev/convergence/pkg/api"
)

// Audited actions: what operators do to organizations, tenants and keys, and what a tenant
// does with its own secrets.
const (
	auditOrgCreate           = "org.create"
	auditOrgUpdate           = "org.update"
	auditTenantSpawn         = "tenant.spawn"
	auditTenantDestroy       = "tenant.destroy"
	auditKeyIssue            = "key.issue"
	auditKeyRevoke           = "key.revoke"
	auditWebhookSecretRotate = "webhook_secret.rotate"
	auditUsageRepair         = "usage.repair"
	auditBudgetSet           = "budget.set"
	auditInvoiceCreate       = "invoice.create"
	auditInvoiceFinalize     = "invoice.finalize"
)

var auditActions = []string{auditOrgCreate, auditOrgUpdate, auditTenantSpawn, auditTenantDestroy, auditKeyIssue, auditKeyRevoke, auditWebhookSecretRotate, auditUsageRepair, auditBudgetSet, auditInvoiceCreate, auditInvoiceFinalize}

// auditWriteTimeout bounds writing one audit entry, which goes on after the client left.
const auditWriteTimeout = 5 * time.Second

// auditFacts are what an audited handler learned about its target that the request's path does
// not say (a spawned tenant's id, say).
type auditFacts struct {
	OrgID, EnvID, KeyID int64
	// Target names a target that is not an organization, tenant or key.
	Target string
}

const auditKey = "audit"

// noteAudit records facts about the target of the audited request, for its audit entry.
func noteAudit(c echo.Context, f auditFacts) {
	cur, _ := c.Get(auditKey).(auditFacts)
	if f.OrgID != 0 {
		cur.OrgID = f.OrgID
	}
	if f.EnvID != 0 {
		cur.EnvID = f.EnvID
	}
	if f.KeyID != 0 {
		cur.KeyID = f.KeyID
	}
	if f.Target != "" {
		cur.Target = f.Target
	}
	c.Set(auditKey, cur)
}

// audited appends an entry to the audit log for every answered request of the route it wraps,
// successful or refused: who (the admin token's id, or the tenant key's), what, on which
// organization, tenant or key, the request id, the client's address, and the outcome. It sits
// behind authentication, so an entry always has an actor. An entry that cannot be written is
// logged as an error; the request's answer stands.
func (s *Service) audited(action string) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			err := next(c)
			status, outcome := http.StatusInternalServerError, "error"
			var he *httpx.Error
			var ee *echo.HTTPError
			switch {
			case err == nil:
				status, outcome = c.Response().Status, "ok"
			case errors.As(err, &he):
				status, outcome = he.Status, he.Code
			case errors.As(err, &ee):
				status, outcome = ee.Code, strings.ReplaceAll(strings.ToLower(http.StatusText(ee.Code)), " ", "_")
			}
			s.writeAudit(c, action, status, outcome)
			return err
		}
	}
}

func (s *Service) writeAudit(c echo.Context, action string, status int, outcome string) {
	f, _ := c.Get(auditKey).(auditFacts)
	actor := "admin:" + s.adminID
	if t := tenantOf(c); t.KeyID != 0 {
		actor = "key:" + strconv.FormatInt(t.KeyID, 10)
		f.OrgID, f.EnvID = t.OrgID, t.EnvID
	}
	// What the handler did not note, the path names, when it names a valid id.
	for name, id := range map[string]*int64{"orgId": &f.OrgID, "envId": &f.EnvID, "keyId": &f.KeyID} {
		if n, err := strconv.ParseInt(c.Param(name), 10, 64); *id == 0 && err == nil && n > 0 {
			*id = n
		}
	}
	var target []string
	if f.KeyID > 0 {
		target = append(target, fmt.Sprintf("key %d", f.KeyID))
	}
	if f.EnvID > 0 {
		target = append(target, fmt.Sprintf("tenant %d", f.EnvID))
	}
	if f.OrgID > 0 {
		target = append(target, fmt.Sprintf("organization %d", f.OrgID))
	}
	switch {
	case f.Target != "":
		target = []string{f.Target}
	case len(target) == 0:
		target = append(target, "none") // a refused request that named nothing valid
	}
	client, _, err := net.SplitHostPort(c.Request().RemoteAddr)
	if err != nil {
		client = c.Request().RemoteAddr
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(c.Request().Context()), auditWriteTimeout)
	defer cancel()
	if _, err := s.deps.Pool.Exec(ctx, `
		INSERT INTO audit_log (actor, action, org_id, env_id, target, request_id, client, status, outcome)
		VALUES ($1, $2, NULLIF($3, 0), NULLIF($4, 0), $5, NULLIF($6, ''), $7, $8, $9)`,
		actor, action, f.OrgID, f.EnvID, strings.Join(target, " of "), httpx.RequestID(c), client, status, outcome); err != nil {
		s.logger.Error("audit log entry not written", "action", action, "actor", actor, "target", target, "status", status,
			"err", err, "request_id", httpx.RequestID(c))
	}
}

// adminTokenID identifies an admin token in the audit log without revealing it: the first 12
// hex digits of its SHA-256.
func adminTokenID(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])[:12]
}

// listAudit answers the audit log, newest first, filtered by ?orgId=, ?envId=, ?action=, ?from=
// and ?to= (RFC 3339 times or YYYY-MM-DD days, from inclusive, to exclusive), a page of ?limit=
// at a time.
func (s *Service) listAudit(c echo.Context) error {
	var problems []string
	ids := map[string]int64{}
	for _, name := range []string{"orgId", "envId"} {
		if v := c.QueryParam(name); v != "" {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n <= 0 {
				problems = append(problems, fmt.Sprintf("%s %q is not valid: use a positive id", name, v))
			}
			ids[name] = n
		}
	}
	action := c.QueryParam("action")
	if action != "" && !slices.Contains(auditActions, action) {
		problems = append(problems, fmt.Sprintf("action %q is not known: use one of %s", action, strings.Join(auditActions, ", ")))
	}
	var from, to *time.Time
	for name, dst := range map[string]**time.Time{"from": &from, "to": &to} {
		if v := c.QueryParam(name); v != "" {
			t, err := parseTimeOrDay(v)
			if err != nil {
				problems = append(problems, fmt.Sprintf("%s %q is not valid: use an RFC 3339 time or a day, YYYY-MM-DD", name, v))
				continue
			}
			*dst = &t
		}
	}
	if from != nil && to != nil && !from.Before(*to) {
		problems = append(problems, "from must be before to")
	}
	if len(problems) > 0 {
		slices.Sort(problems)
		return httpx.BadRequest("%s", strings.Join(problems, "; "))
	}
	limit, before, err := pageParams(c)
	if err != nil {
		return err
	}
	rows, _ := s.deps.Pool.Query(c.Request().Context(), `
		SELECT id, at, actor, action, org_id, env_id, target, request_id, client, status, outcome FROM audit_log
		WHERE ($1 = 0 OR org_id = $1) AND ($2 = 0 OR env_id = $2) AND ($3 = '' OR action = $3)
			AND ($4::timestamptz IS NULL OR at >= $4) AND ($5::timestamptz IS NULL OR at < $5) AND ($6 = 0 OR id < $6)
		ORDER BY id DESC LIMIT $7`,
		ids["orgId"], ids["envId"], action, from, to, before, limit+1)
	entries, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (e contract.AuditEntry, err error) {
		err = r.Scan(&e.ID, &e.At, &e.Actor, &e.Action, &e.OrgID, &e.EnvID, &e.Target, &e.RequestID, &e.Client, &e.Status, &e.Outcome)
		return e, err
	})
	if err != nil {
		return fmt.Errorf("read the audit log: %w", err)
	}
	entries, next := pageOf(entries, limit, func(e contract.AuditEntry) int64 { return e.ID })
	return c.JSON(http.StatusOK, contract.AuditPage{Success: true, Entries: entries, NextCursor: next})
}

// parseTimeOrDay reads an RFC 3339 time or a day (YYYY-MM-DD, its start in UTC).
func parseTimeOrDay(s string) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	return time.Parse(time.DateOnly, s)
}
