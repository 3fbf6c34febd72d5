package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/labstack/echo/v4"

	"github.com/convergence-dev/convergence/internal/apikey"
	"github.com/convergence-dev/convergence/internal/httpx"
	"github.com/convergence-dev/convergence/internal/natsrpc"
	contract "github.com/convergence-dev/convergence/pkg/api"
	"github.com/convergence-dev/convergence/pkg/events"
	tenanttemplates "github.com/convergence-dev/convergence/tenant-templates"
)

// Resource limits a spawn may ask for, and what it gets when it asks for none.
const (
	defaultMemoryMB = 256
	minMemoryMB     = 32
	maxMemoryMB     = 4096
	defaultCPUs     = 0.5
	minCPUs         = 0.05
	maxCPUs         = 4.0
	defaultPIDs     = 256
	minPIDs         = 32
	maxPIDs         = 4096
)

// spawnSpec is a validated spawn request.
type spawnSpec struct {
	name, language, framework, image string
	orgID                            int64 // 0 means the default organization
	memoryBytes, nanoCPUs, pids      int64
	egress                           string
}

// validateSpawn checks the body of POST /tenant/spawn and returns the tenant it asks for.
func validateSpawn(r contract.SpawnRequest) (spawnSpec, error) {
	sp := spawnSpec{name: r.Name}
	var problems []string
	if !dnsLabel.MatchString(r.Name) {
		problems = append(problems, fmt.Sprintf("name %q is not valid: use %s", r.Name, validNameHelp))
	}
	switch {
	case r.Image != "" && (r.Language != "" || r.Framework != ""):
		problems = append(problems, "give either language (and framework) or image, not both")
	case r.Image != "":
		if len(r.Image) > 255 || !imageRef.MatchString(r.Image) {
			problems = append(problems, fmt.Sprintf("image %q is not a valid image reference: use name[:tag] of an image on the Docker host, such as %s", r.Image, tenanttemplates.GoImage))
		}
		sp.image = r.Image
	case r.Language == "" && r.Framework != "":
		problems = append(problems, "framework needs a language")
	default:
		tpl := tenanttemplates.DefaultTemplate()
		if r.Language != "" {
			var err error
			if tpl, err = tenanttemplates.LookupTemplate(r.Language, r.Framework); err != nil {
				problems = append(problems, err.Error())
			}
		}
		sp.language, sp.framework, sp.image = tpl.Language, tpl.Framework, tpl.Image
	}
	if r.OrgID != nil {
		if *r.OrgID <= 0 {
			problems = append(problems, fmt.Sprintf("orgId %d is not valid: use the id of an organization (GET /api/v1/orgs), or leave it out for the default one", *r.OrgID))
		}
		sp.orgID = *r.OrgID
	}
	mem, cpus, pids := int64(defaultMemoryMB), defaultCPUs, int64(defaultPIDs)
	if l := r.Limits; l != nil {
		if l.MemoryMb != nil {
			mem = *l.MemoryMb
		}
		if l.Cpus != nil {
			cpus = *l.Cpus
		}
		if l.Pids != nil {
			pids = *l.Pids
		}
	}
	if mem < minMemoryMB || mem > maxMemoryMB {
		problems = append(problems, fmt.Sprintf("limits.memoryMb %d is out of range: use %d to %d (default %d)", mem, minMemoryMB, maxMemoryMB, defaultMemoryMB))
	}
	if cpus < minCPUs || cpus > maxCPUs {
		problems = append(problems, fmt.Sprintf("limits.cpus %g is out of range: use %g to %g (default %g)", cpus, minCPUs, maxCPUs, defaultCPUs))
	}
	if pids < minPIDs || pids > maxPIDs {
		problems = append(problems, fmt.Sprintf("limits.pids %d is out of range: use %d to %d (default %d)", pids, minPIDs, maxPIDs, defaultPIDs))
	}
	sp.memoryBytes, sp.nanoCPUs, sp.pids = mem<<20, int64(cpus*1e9), pids
	egress, err := events.ParseEgress(r.Egress)
	if err != nil {
		problems = append(problems, err.Error())
	}
	sp.egress = egress
	if len(problems) > 0 {
		return spawnSpec{}, httpx.BadRequest("%s", strings.Join(problems, "; "))
	}
	return sp, nil
}

// spawn creates a tenant: the provisioner admits it (see events.TenantAdmission) and hands back
// its new key sealed to this request, and the API records the key's digest. Unless
// ?async=true, it then waits (?wait=, 60s by default) until the provisioner has run the tenant
// or failed it. Once the tenant is admitted, the answer carries its key whatever happens next:
// it is shown nowhere else.
func (h *tenantAPI) spawn(c echo.Context) error {
	ctx := c.Request().Context()
	var req contract.SpawnRequest
	if err := decodeBody(c, &req); err != nil {
		return err
	}
	sp, err := validateSpawn(req)
	if err != nil {
		return err
	}
	async, wait, err := waitParams(c)
	if err != nil {
		return err
	}
	requestID := httpx.RequestID(c)
	admitted, key, err := h.admit(ctx, sp, requestID)
	if err != nil {
		return err
	}
	noteAudit(c, auditFacts{OrgID: admitted.OrgID, EnvID: admitted.EnvID})
	code, message := http.StatusAccepted, ""
	if !async {
		if h.awaitSpawn(ctx, admitted.EnvID, wait, requestID) {
			code = http.StatusCreated
		} else {
			message = fmt.Sprintf("still provisioning after %s; follow it with GET /api/v1/tenant/%d/status", wait, admitted.EnvID)
		}
		if ctx.Err() != nil {
			return nil // The client left; the spawn goes on without it.
		}
	}
	return h.answerSpawn(c, admitted, key, code, message)
}

// admit has the provisioner admit the tenant sp describes, opens its key, and records the
// key's digest, which tenants authenticate with.
func (h *tenantAPI) admit(ctx context.Context, sp spawnSpec, requestID string) (events.TenantView, string, error) {
	orgID, limits, err := h.s.orgOf(ctx, sp.orgID)
	if err != nil {
		return events.TenantView{}, "", err
	}
	recv, err := apikey.NewReceiver()
	if err != nil {
		return events.TenantView{}, "", err
	}
	adm, err := natsrpc.Call[events.TenantAdmission, events.TenantAdmitted](ctx, h.s.deps.NC, events.SubjectTenantAdmit, events.TenantAdmission{
		OrgID: orgID, MaxTenants: limits.MaxTenants, Name: sp.name, Language: sp.language, Framework: sp.framework, Image: sp.image,
		Limits: events.Limits{MemoryBytes: sp.memoryBytes, NanoCPUs: sp.nanoCPUs, PIDs: sp.pids}, Egress: sp.egress,
		ReplyKey: recv.PublicKey(), RequestID: requestID,
	})
	if err != nil {
		return events.TenantView{}, "", admissionError(err, orgID, limits)
	}
	envID := adm.Tenant.EnvID
	key, err := recv.Open(envID, adm.SealedKey)
	if err != nil {
		return events.TenantView{}, "", err
	}
	issued := events.TenantKeyIssued{EnvID: envID, OrgID: orgID, Name: sp.name, KeyDigest: apikey.Digest(key), KeyPrefix: apikey.Display(key)}
	if err := pgx.BeginFunc(ctx, h.s.deps.Pool, func(tx pgx.Tx) error { return recordKey(ctx, tx, issued) }); err != nil {
		return events.TenantView{}, "", err
	}
	h.s.logger.Info("tenant spawn accepted", "envId", envID, "name", sp.name, "image", sp.image, "apiKey", apikey.Display(key), "request_id", requestID)
	return adm.Tenant, key, nil
}

// awaitSpawn waits up to wait until the admitted tenant envID runs or fails, and reports
// whether it did. It never fails the spawn: the answer must carry the key.
func (h *tenantAPI) awaitSpawn(ctx context.Context, envID int64, wait time.Duration, requestID string) bool {
	// The running fact comes once the container answers; waitFor reads the state first, so
	// a fact that came before the subscription is not missed.
	sub, err := h.s.deps.NC.SubscribeSync(events.LifecycleFilter("", envID))
	if err != nil {
		return false
	}
	defer func() { _ = sub.Unsubscribe() }()
	settled, err := h.waitFor(ctx, sub, envID, func(st string) bool { return st != string(events.StateProvisioning) }, wait)
	if err != nil {
		h.s.logger.Warn("wait for a spawn", "envId", envID, "err", err, "request_id", requestID)
	}
	return settled
}

// answerSpawn answers a spawn with the tenant as it stands (as admitted, if the provisioner does
// not answer now) and its key: 201 running, 202 still provisioning, 422 failed, 409 destroyed
// meanwhile.
func (h *tenantAPI) answerSpawn(c echo.Context, admitted events.TenantView, key string, code int, message string) error {
	v := tenantView(admitted)
	if now, err := h.loadTenant(c.Request().Context(), admitted.EnvID); err == nil {
		v = now
	}
	v.APIKey = key
	switch string(v.Status) {
	case string(events.StateError):
		return c.JSON(http.StatusUnprocessableEntity, failedSpawnBody(c, v))
	case string(events.StateDestroyed):
		code = http.StatusConflict
		message = "the tenant was destroyed while it was being spawned"
	}
	return c.JSON(code, contract.TenantAnswer{Success: code != http.StatusConflict, Tenant: v, Message: message})
}

// failedSpawnBody is the answer to a spawn whose tenant ended in error: the error envelope,
// plus the tenant so its envId, logs and reason are at hand.
func failedSpawnBody(c echo.Context, v contract.Tenant) map[string]any {
	reason := "the tenant could not be started"
	if v.Reason != nil {
		reason = *v.Reason
	}
	return map[string]any{
		"success": false,
		"error": map[string]string{
			"code":      "spawn_failed",
			"message":   fmt.Sprintf("tenant %d failed to start: %s", v.EnvID, reason),
			"requestId": httpx.RequestID(c),
		},
		"tenant": v,
	}
}

// admissionError is the HTTP answer to a refused admission of a tenant of organization orgID,
// which has limits.
func admissionError(err error, orgID int64, limits planLimits) error {
	var e *natsrpc.Error
	if errors.As(err, &e) {
		switch {
		case e.Reason == events.ReasonTenantLimit:
			return quotaExceeded("maxTenants: organization %d has %d tenants, its quota on plan %q; destroy one, or raise the quota with "+
				"PATCH /api/v1/orgs/%d (a larger plan, or maxTenants)", orgID, limits.MaxTenants, limits.Plan, orgID)
		case e.Reason == events.ReasonNoFreePort:
			return &httpx.Error{Status: http.StatusServiceUnavailable, Code: "no_free_port", RetryAfter: 30 * time.Second, Message: e.Message}
		case e.Code == natsrpc.CodeUnavailable:
			return &httpx.Error{Status: http.StatusServiceUnavailable, Code: "provisioner_unavailable", RetryAfter: 5 * time.Second,
				Message: "no provisioner answered, so the tenant cannot be admitted; start the provisioner and retry"}
		}
	}
	return fromProvisioner(err)
}
