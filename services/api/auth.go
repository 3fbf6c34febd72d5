package api

import (
	"errors"
	"net/http"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/labstack/echo/v4"

	"github.com/convergence-dev/convergence/internal/apikey"
	"github.com/convergence-dev/convergence/internal/httpx"
)

// requireAdmin admits requests carrying the admin token as a bearer token (httpx.SameSecret).
func (s *Service) requireAdmin(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		token, ok := httpx.Bearer(c.Request())
		if !ok {
			return httpx.Errorf(http.StatusUnauthorized, "unauthorized", "missing bearer token: send Authorization: Bearer <admin token>")
		}
		if !httpx.SameSecret(token, s.cfg.AdminToken) {
			return httpx.Errorf(http.StatusUnauthorized, "unauthorized", "invalid admin token")
		}
		return next(c)
	}
}

// Tenant is the caller behind a tenant API key.
type Tenant struct {
	EnvID int64
	OrgID int64
	Name  string
	// Plan is the plan of the tenant's organization.
	Plan  string
	KeyID int64
	// KeyExpiresAt is when the key stops working, nil while no rotation replaced it.
	KeyExpiresAt *time.Time
}

// lastUsedResolution is how stale a key's lastUsedAt may be: it is written at most once per
// key in this time, not on every request.
const lastUsedResolution = time.Minute

// requireTenant admits requests carrying an API key that is neither revoked (as a destroy or an
// operator revokes keys) nor expired (as a rotation expires the keys it replaces), and puts the
// tenant in the echo context (tenantOf). Keys are looked up by their SHA-256 digest on every
// request, so a revocation holds on every replica at once; a malformed key is refused without a
// lookup.
func (s *Service) requireTenant(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		key, ok := httpx.Bearer(c.Request())
		if !ok {
			return httpx.Errorf(http.StatusUnauthorized, "unauthorized", "missing bearer token: send Authorization: Bearer <tenant API key>")
		}
		invalid := httpx.Errorf(http.StatusUnauthorized, "unauthorized", "invalid API key")
		if !apikey.WellFormed(key) {
			return invalid
		}
		ctx := c.Request().Context()
		var t Tenant
		var lastUsed *time.Time
		err := s.deps.Pool.QueryRow(ctx, `
			SELECT k.env_id, k.org_id, k.name, o.plan, k.id, k.expires_at, k.last_used_at
			FROM tenant_keys k JOIN organizations o ON o.id = k.org_id
			WHERE k.digest = $1 AND k.revoked_at IS NULL AND (k.expires_at IS NULL OR k.expires_at > now())`,
			apikey.Digest(key)).Scan(&t.EnvID, &t.OrgID, &t.Name, &t.Plan, &t.KeyID, &t.KeyExpiresAt, &lastUsed)
		if errors.Is(err, pgx.ErrNoRows) {
			return invalid
		}
		if err != nil {
			return err
		}
		if lastUsed == nil || time.Since(*lastUsed) >= lastUsedResolution {
			if _, err := s.deps.Pool.Exec(ctx, `UPDATE tenant_keys SET last_used_at = now() WHERE id = $1`, t.KeyID); err != nil {
				s.logger.Warn("record a key's last use", "keyId", t.KeyID, "err", err)
			}
		}
		c.Set("tenant", t)
		httpx.SetTenant(c, t.EnvID)
		return next(c)
	}
}

// tenantOf returns the tenant requireTenant admitted.
func tenantOf(c echo.Context) Tenant {
	t, _ := c.Get("tenant").(Tenant)
	return t
}
