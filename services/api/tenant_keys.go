package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/labstack/echo/v4"

	"github.com/convergence-dev/convergence/internal/apikey"
	"github.com/convergence-dev/convergence/internal/httpx"
	"github.com/convergence-dev/convergence/internal/natsrpc"
	contract "github.com/convergence-dev/convergence/pkg/api"
	"github.com/convergence-dev/convergence/pkg/events"
)

// How long the keys a rotation replaces go on working, unless it says otherwise.
const (
	defaultKeyOverlap = 24 * time.Hour
	maxKeyOverlap     = 30 * 24 * time.Hour
)

// maxWorkingKeys bounds the keys of one tenant that work at once: a rotation with an overlap
// adds one, so rotations in a loop cannot pile up working keys.
const maxWorkingKeys = 10

const keyColumns = `id, prefix, created_at, last_used_at, expires_at, revoked_at,
	revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())`

// scanKey reads a key as operators see it: never the key itself, which only the rotation's
// answer carries (APIKey).
func scanKey(row pgx.CollectableRow) (contract.Key, error) {
	var k contract.Key
	err := row.Scan(&k.ID, &k.Prefix, &k.CreatedAt, &k.LastUsedAt, &k.ExpiresAt, &k.RevokedAt, &k.Active)
	return k, err
}

// keyRoutes registers the operators' endpoints for a tenant's keys.
func (h *tenantAPI) keyRoutes(admin *echo.Group) {
	admin.POST("/tenant/:envId/keys", h.rotateKey, h.s.audited(auditKeyIssue), h.s.idempotent)
	admin.GET("/tenant/:envId/keys", h.listKeys)
	admin.DELETE("/tenant/:envId/keys/:keyId", h.revokeKey, h.s.audited(auditKeyRevoke))
}

// rotateKey issues tenant envId a new key, shown in this answer only, and gives the keys it had
// an expiry overlapSeconds from now (24 h by default; 0 ends them now). The provisioner makes the key
// and seals it for the tenant's container; the API records its digest and expires the others in
// one transaction; then the provisioner puts the key into the running container, whose app
// reads it from its key file, so requests go on without a gap. An answer with "delivered":
// false means the container was not reached now: the provisioner delivers the key within a
// minute, well inside the default overlap.
func (h *tenantAPI) rotateKey(c echo.Context) error {
	ctx := c.Request().Context()
	envID, err := envIDParam(c)
	if err != nil {
		return err
	}
	var req contract.RotateTenantKeyJSONBody // It may be left out.
	if err := httpx.DecodeJSON(c, &req, ""); err != nil {
		return err
	}
	overlap := defaultKeyOverlap
	if s := req.OverlapSeconds; s != nil {
		if *s < 0 || *s > int(maxKeyOverlap/time.Second) {
			return httpx.BadRequest("overlapSeconds %d is out of range: use 0 (the old keys stop now) to %d (default %d)",
				*s, int64(maxKeyOverlap/time.Second), int64(defaultKeyOverlap/time.Second))
		}
		overlap = time.Duration(*s) * time.Second
	}
	orgID, err := h.s.tenantOrg(ctx, envID)
	if err != nil {
		return err
	}
	noteAudit(c, auditFacts{OrgID: orgID})
	if working, err := h.workingKeys(ctx, envID); err != nil {
		return err
	} else if overlap > 0 && working >= maxWorkingKeys {
		return &httpx.Error{Status: http.StatusConflict, Code: "too_many_keys", Message: fmt.Sprintf(
			"tenant %d has %d working keys, the most it may have; revoke one (DELETE /api/v1/tenant/%d/keys/:keyId), or rotate with overlapSeconds 0",
			envID, working, envID)}
	}
	requestID := httpx.RequestID(c)
	recv, err := apikey.NewReceiver()
	if err != nil {
		return err
	}
	rot, err := natsrpc.Call[events.KeyRotation, events.KeyRotated](ctx, h.s.deps.NC, events.SubjectKeyRotate,
		events.KeyRotation{EnvID: envID, ReplyKey: recv.PublicKey(), RequestID: requestID})
	if err != nil {
		return fromProvisioner(err)
	}
	key, err := recv.Open(envID, rot.SealedKey)
	if err != nil {
		return err
	}
	var added contract.Key
	var previous []contract.Key
	err = pgx.BeginFunc(ctx, h.s.deps.Pool, func(tx pgx.Tx) error {
		if err := recordKey(ctx, tx, rot.Key); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, `
			UPDATE tenant_keys SET expires_at = LEAST(coalesce(expires_at, 'infinity'), now() + $3 * interval '1 second')
			WHERE env_id = $1 AND digest <> $2 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())
			RETURNING `+keyColumns, envID, apikey.Digest(key), int64(overlap/time.Second))
		if err != nil {
			return fmt.Errorf("expire the replaced keys: %w", err)
		}
		if previous, err = pgx.CollectRows(rows, scanKey); err != nil {
			return fmt.Errorf("expire the replaced keys: %w", err)
		}
		rows, _ = tx.Query(ctx, `SELECT `+keyColumns+` FROM tenant_keys WHERE digest = $1`, apikey.Digest(key))
		added, err = pgx.CollectExactlyOneRow(rows, scanKey)
		return err
	})
	if err != nil {
		return err
	}
	noteAudit(c, auditFacts{KeyID: added.ID})
	if !added.Active {
		// The tenant's destroy was asked for meanwhile.
		return httpx.Conflict("tenant %d was destroyed while its key was rotated", envID)
	}
	added.APIKey = key
	delivered := h.deliverKey(ctx, envID, requestID)
	h.s.logger.Info("tenant key rotated", "envId", envID, "keyId", added.ID, "apiKey", added.Prefix,
		"replaced", len(previous), "overlap", overlap, "delivered", delivered, "request_id", requestID)
	if previous == nil {
		previous = []contract.Key{}
	}
	return c.JSON(http.StatusCreated, map[string]any{"success": true, "key": added, "replacedKeys": previous, "delivered": delivered})
}

// deliverKey asks the provisioner to put the tenant's newest key into its running container,
// and reports whether it did. A failure is left to the provisioner's health watcher.
func (h *tenantAPI) deliverKey(ctx context.Context, envID int64, requestID string) bool {
	d, err := natsrpc.Call[events.KeyDelivery, events.KeyDelivered](ctx, h.s.deps.NC, events.SubjectKeyDeliver,
		events.KeyDelivery{EnvID: envID, RequestID: requestID})
	if err != nil {
		h.s.logger.Warn("deliver a rotated key; the provisioner's health watcher will", "envId", envID, "err", err, "request_id", requestID)
		return false
	}
	return d.Delivered
}

// listKeys answers tenant envId's keys, newest first, a page of ?limit= at a time.
func (h *tenantAPI) listKeys(c echo.Context) error {
	ctx := c.Request().Context()
	envID, err := envIDParam(c)
	if err != nil {
		return err
	}
	limit, before, err := pageParams(c)
	if err != nil {
		return err
	}
	if _, err := h.s.tenantOrg(ctx, envID); err != nil {
		return err
	}
	rows, _ := h.s.deps.Pool.Query(ctx, `
		SELECT `+keyColumns+` FROM tenant_keys WHERE env_id = $1 AND ($2 = 0 OR id < $2) ORDER BY id DESC LIMIT $3`,
		envID, before, limit+1)
	keys, err := pgx.CollectRows(rows, scanKey)
	if err != nil {
		return fmt.Errorf("list tenant keys: %w", err)
	}
	keys, next := pageOf(keys, limit, func(k contract.Key) int64 { return k.ID })
	return c.JSON(http.StatusOK, contract.KeyList{Success: true, Keys: keys, NextCursor: next})
}

// revokeKey revokes tenant envId's key keyId at once, on every replica (each request reads the
// key's state). Revoking a revoked key answers it as it is.
func (h *tenantAPI) revokeKey(c echo.Context) error {
	ctx := c.Request().Context()
	envID, err := envIDParam(c)
	if err != nil {
		return err
	}
	keyID, err := strconv.ParseInt(c.Param("keyId"), 10, 64)
	if err != nil || keyID <= 0 {
		return httpx.BadRequest("keyId %q is not valid: use a key's id (GET /api/v1/tenant/%d/keys)", c.Param("keyId"), envID)
	}
	orgID, err := h.s.tenantOrg(ctx, envID)
	if err != nil {
		return err
	}
	noteAudit(c, auditFacts{OrgID: orgID})
	rows, _ := h.s.deps.Pool.Query(ctx, `
		UPDATE tenant_keys SET revoked_at = coalesce(revoked_at, now()), revoked_reason = coalesce(revoked_reason, 'revoked')
		WHERE env_id = $1 AND id = $2 RETURNING `+keyColumns, envID, keyID)
	k, err := pgx.CollectExactlyOneRow(rows, scanKey)
	if errors.Is(err, pgx.ErrNoRows) {
		return httpx.NotFound(fmt.Sprintf("key %d of tenant %d (list them with GET /api/v1/tenant/%d/keys)", keyID, envID, envID))
	}
	if err != nil {
		return fmt.Errorf("revoke key: %w", err)
	}
	h.s.logger.Info("tenant key revoked", "envId", envID, "keyId", keyID, "apiKey", k.Prefix, "request_id", httpx.RequestID(c))
	body := map[string]any{"success": true, "key": k}
	if working, err := h.workingKeys(ctx, envID); err == nil && working == 0 {
		body["message"] = fmt.Sprintf("tenant %d has no working key left: issue one with POST /api/v1/tenant/%d/keys", envID, envID)
	}
	return c.JSON(http.StatusOK, body)
}

// workingKeys counts tenant envID's keys that are neither revoked nor expired.
func (h *tenantAPI) workingKeys(ctx context.Context, envID int64) (int, error) {
	var n int
	err := h.s.deps.Pool.QueryRow(ctx, `
		SELECT count(*) FROM tenant_keys WHERE env_id = $1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())`,
		envID).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("count the tenant's keys: %w", err)
	}
	return n, nil
}
