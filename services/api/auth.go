package api

import (
	"errors"
	"net/http"

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
}

// requireTenant admits requests carrying an API key that is not revoked (a tenant's keys are
// revoked when its destroy is asked for), and puts the tenant in the echo context (tenantOf). Keys are looked up by their SHA-256
// digest; a malformed key is refused without a lookup.
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
		var t Tenant
		err := s.deps.Pool.QueryRow(c.Request().Context(), `
			SELECT env_id, org_id, name FROM tenant_keys WHERE digest = $1 AND revoked_at IS NULL`,
			apikey.Digest(key)).Scan(&t.EnvID, &t.OrgID, &t.Name)
		if errors.Is(err, pgx.ErrNoRows) {
			return invalid
		}
		if err != nil {
			return err
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
