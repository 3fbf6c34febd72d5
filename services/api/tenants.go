package api

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/labstack/echo/v4"
	"github.com/nats-io/nats.go"

	"github.com/convergence-dev/convergence/internal/apikey"
	"github.com/convergence-dev/convergence/internal/httpx"
	"github.com/convergence-dev/convergence/internal/outbox"
	"github.com/convergence-dev/convergence/pkg/events"
	"github.com/convergence-dev/convergence/services/provisioner/keyring"
	"github.com/convergence-dev/convergence/services/provisioner/live"
	"github.com/convergence-dev/convergence/services/provisioner/ports"
	tenanttemplates "github.com/convergence-dev/convergence/tenant-templates"
)

// eventSource is the CloudEvents source of the API's events.
const eventSource = "convergence/api"

// Waits for a spawn or destroy to finish, chosen per request with ?wait=.
const (
	defaultWait = 60 * time.Second
	maxWait     = 5 * time.Minute
	// recheckInterval is how often a wait reads the database while no fact arrives, in case
	// core NATS dropped it.
	recheckInterval = 2 * time.Second
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

// Logs: how many lines a request may ask for, and get by default.
const (
	defaultTail = 100
	maxTail     = 10_000
)

// Lists: page sizes.
const (
	defaultPageSize = 50
	maxPageSize     = 200
)

var (
	dnsLabel = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	// imageRef is a local image reference: [host[:port]/]path[:tag][@digest], or an image id.
	imageRef = regexp.MustCompile(`^((?:[a-zA-Z0-9.-]+(?::[0-9]+)?/)?[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[a-f0-9]{64})?|sha256:[a-f0-9]{64})$`)
)

const validNameHelp = "1-63 lowercase letters, digits and '-', starting and ending with a letter or digit, such as acme-corp-ai"

// tenantAPI serves the operators' tenant endpoints.
type tenantAPI struct {
	s    *Service
	live *live.Client
}

// tenantRoutes registers the operators' tenant and organization endpoints.
func (s *Service) tenantRoutes(admin *echo.Group) {
	h := &tenantAPI{s: s, live: live.NewClient(s.deps.NC, 0)}
	admin.POST("/tenant/spawn", h.spawn)
	admin.GET("/tenant", h.list)
	admin.GET("/tenant/:envId/status", h.status)
	admin.GET("/tenant/:envId/logs", h.logs)
	admin.DELETE("/tenant/:envId", h.destroy)
	s.orgRoutes(admin)
}

// tenantView is a tenant as the API shows it. APIKey is set in the spawn answer only;
// Container in the status answer only.
type tenantView struct {
	EnvID           int64        `json:"envId"`
	OrgID           int64        `json:"orgId"`
	Name            string       `json:"name"`
	Status          string       `json:"status"`
	DesiredStatus   string       `json:"desiredStatus"`
	Health          *string      `json:"health"`
	Reason          *string      `json:"reason,omitempty"`
	Port            *int         `json:"port"`
	APIKey          string       `json:"apiKey,omitempty"`
	APIKeyPrefix    string       `json:"apiKeyPrefix"`
	Language        *string      `json:"language,omitempty"`
	Framework       *string      `json:"framework,omitempty"`
	Image           string       `json:"image"`
	Limits          limitsView   `json:"limits"`
	Generation      int64        `json:"generation"`
	ContainerName   *string      `json:"containerName,omitempty"`
	CreatedAt       time.Time    `json:"createdAt"`
	UpdatedAt       time.Time    `json:"updatedAt"`
	StatusChangedAt time.Time    `json:"statusChangedAt"`
	DestroyedAt     *time.Time   `json:"destroyedAt,omitempty"`
	Container       *live.Status `json:"container,omitempty"`
	// ContainerError says why Container is missing from a status answer.
	ContainerError string `json:"containerError,omitempty"`
}

type limitsView struct {
	MemoryMB int64   `json:"memoryMb"`
	CPUs     float64 `json:"cpus"`
	PIDs     int64   `json:"pids"`
}

const tenantViewColumns = `id, org_id, name, status, desired_status, health, reason, port,
	coalesce(api_key_prefix, ''), language, framework, coalesce(image, ''), coalesce(memory_bytes, 0),
	coalesce(nano_cpus, 0), coalesce(pids_limit, 0), generation, container_name, created_at,
	updated_at, status_changed_at, destroyed_at`

func scanTenantView(row pgx.Row) (tenantView, error) {
	var v tenantView
	var mem, nano int64
	err := row.Scan(&v.EnvID, &v.OrgID, &v.Name, &v.Status, &v.DesiredStatus, &v.Health, &v.Reason, &v.Port,
		&v.APIKeyPrefix, &v.Language, &v.Framework, &v.Image, &mem, &nano, &v.Limits.PIDs, &v.Generation,
		&v.ContainerName, &v.CreatedAt, &v.UpdatedAt, &v.StatusChangedAt, &v.DestroyedAt)
	v.Limits.MemoryMB = mem >> 20
	v.Limits.CPUs = float64(nano) / 1e9
	return v, err
}

// loadTenant reads one tenant, answering 404 when there is none.
func (h *tenantAPI) loadTenant(ctx context.Context, envID int64) (tenantView, error) {
	v, err := scanTenantView(h.s.deps.Pool.QueryRow(ctx, `SELECT `+tenantViewColumns+` FROM environments WHERE id = $1`, envID))
	if errors.Is(err, pgx.ErrNoRows) {
		return tenantView{}, httpx.NotFound(fmt.Sprintf("tenant %d", envID))
	}
	if err != nil {
		return tenantView{}, fmt.Errorf("load tenant %d: %w", envID, err)
	}
	return v, nil
}

// spawnRequest is the body of POST /tenant/spawn.
type spawnRequest struct {
	Name      string       `json:"name"`
	Language  string       `json:"language"`
	Framework string       `json:"framework"`
	Image     string       `json:"image"`
	OrgID     *int64       `json:"orgId"`
	Limits    *limitsInput `json:"limits"`
}

type limitsInput struct {
	MemoryMB *int64   `json:"memoryMb"`
	CPUs     *float64 `json:"cpus"`
	PIDs     *int64   `json:"pids"`
}

// spawnSpec is a validated spawn request.
type spawnSpec struct {
	name, language, framework, image string
	orgID                            int64 // 0 means the default organization
	memoryBytes, nanoCPUs, pids      int64
}

func (r spawnRequest) validate() (spawnSpec, error) {
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
		if l.MemoryMB != nil {
			mem = *l.MemoryMB
		}
		if l.CPUs != nil {
			cpus = *l.CPUs
		}
		if l.PIDs != nil {
			pids = *l.PIDs
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
	if len(problems) > 0 {
		return spawnSpec{}, httpx.BadRequest("%s", strings.Join(problems, "; "))
	}
	return sp, nil
}

// spawn creates a tenant: the environment row (provisioning), its port lease, its hashed key
// and the key sealed for the provisioner, the tenant.spawn command and the provisioning fact,
// all in one transaction. Unless ?async=true, it then waits (?wait=, 60s by default) until the
// provisioner has run the tenant or failed it.
func (h *tenantAPI) spawn(c echo.Context) error {
	ctx := c.Request().Context()
	var req spawnRequest
	if err := decodeBody(c, &req); err != nil {
		return err
	}
	sp, err := req.validate()
	if err != nil {
		return err
	}
	async, wait, err := waitParams(c)
	if err != nil {
		return err
	}

	key, digest := apikey.New()
	requestID := httpx.RequestID(c)
	var envID int64
	var sub *nats.Subscription
	err = h.s.deps.Outbox.Tx(ctx, func(tx pgx.Tx) error {
		orgID, err := lockOrgForSpawn(ctx, tx, sp.orgID)
		if err != nil {
			return err
		}
		var language, framework any
		if sp.language != "" {
			language, framework = sp.language, sp.framework
		}
		err = tx.QueryRow(ctx, `
			INSERT INTO environments (org_id, name, status, desired_status, language, framework, image,
				memory_bytes, nano_cpus, pids_limit, api_key_hash, api_key_prefix, request_id)
			VALUES ($1, $2, 'provisioning', 'running', $3, $4, $5, $6, $7, $8, $9, $10, $11)
			RETURNING id`,
			orgID, sp.name, language, framework, sp.image, sp.memoryBytes, sp.nanoCPUs, sp.pids,
			digest, apikey.Display(key), requestID).Scan(&envID)
		if isUniqueViolation(err, "environments_live_name") {
			return httpx.Conflict("a tenant named %q already exists in organization %d; pick another name, or destroy that tenant first", sp.name, orgID)
		}
		if err != nil {
			return fmt.Errorf("insert tenant: %w", err)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO tenant_keys (digest, env_id, org_id, name, prefix) VALUES ($1, $2, $3, $4, $5)`,
			digest, envID, orgID, sp.name, apikey.Display(key)); err != nil {
			return fmt.Errorf("record tenant key: %w", err)
		}
		port, err := ports.Lease(ctx, tx, envID)
		if errors.Is(err, ports.ErrNoFreePort) {
			return &httpx.Error{Status: http.StatusServiceUnavailable, Code: "no_free_port", RetryAfter: 30 * time.Second,
				Message: "every tenant port is in use; destroy a tenant, or widen the provisioner's port range (-provisioner.ports)"}
		}
		if err != nil {
			return err
		}
		if err := keyring.Seal(ctx, tx, envID, key); err != nil {
			if errors.Is(err, keyring.ErrNoRecipients) {
				return &httpx.Error{Status: http.StatusServiceUnavailable, Code: "provisioner_unavailable", RetryAfter: 5 * time.Second,
					Message: "no provisioner has started yet, so the tenant's key cannot be handed over; start the provisioner and retry"}
			}
			return err
		}
		cmd := events.TenantSpawn{EnvID: envID, OrgID: orgID, Name: sp.name, Image: sp.image, Port: port, Generation: 1,
			Limits: events.Limits{MemoryBytes: sp.memoryBytes, NanoCPUs: sp.nanoCPUs, PIDs: sp.pids}}
		if err := writeEvent(ctx, tx, events.SubjectTenantSpawn, events.TypeTenantSpawn, envID, requestID, cmd); err != nil {
			return err
		}
		fact := events.TenantLifecycle{EnvID: envID, OrgID: orgID, Name: sp.name, State: events.StateProvisioning, Port: port, At: time.Now().UTC()}
		if err := writeEvent(ctx, tx, events.LifecycleSubject(events.StateProvisioning, envID), events.TypeTenantLifecycle, envID, requestID, fact); err != nil {
			return err
		}
		if !async {
			// Subscribed before the commit, so the outcome cannot slip by unseen.
			if sub, err = h.s.deps.NC.SubscribeSync(events.LifecycleFilter("", envID)); err != nil {
				return fmt.Errorf("subscribe to lifecycle facts: %w", err)
			}
		}
		return nil
	})
	if sub != nil {
		defer func() { _ = sub.Unsubscribe() }()
	}
	if err != nil {
		return err
	}
	h.s.logger.Info("tenant spawn accepted", "envId", envID, "name", sp.name, "image", sp.image, "apiKey", apikey.Display(key), "request_id", requestID)

	code := http.StatusAccepted
	var message string
	if !async {
		settled, err := h.waitFor(ctx, sub, envID, func(st string) bool { return st != string(events.StateProvisioning) }, wait)
		if ctx.Err() != nil {
			return nil // The client left; the spawn goes on without it.
		}
		if err != nil {
			return err
		}
		if settled {
			code = http.StatusCreated
		} else {
			message = fmt.Sprintf("still provisioning after %s; follow it with GET /api/v1/tenant/%d/status", wait, envID)
		}
	}
	v, err := h.loadTenant(ctx, envID)
	if err != nil {
		return err
	}
	v.APIKey = key
	switch v.Status {
	case string(events.StateError):
		return c.JSON(http.StatusUnprocessableEntity, failedSpawnBody(c, v))
	case string(events.StateDestroyed):
		code = http.StatusConflict
		message = "the tenant was destroyed while it was being spawned"
	}
	body := map[string]any{"success": code != http.StatusConflict, "tenant": v}
	if message != "" {
		body["message"] = message
	}
	return c.JSON(code, body)
}

// failedSpawnBody is the answer to a spawn whose tenant ended in error: the error envelope,
// plus the tenant so its envId, logs and reason are at hand.
func failedSpawnBody(c echo.Context, v tenantView) map[string]any {
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

// lockOrgForSpawn locks the organization's row for the spawn's transaction (0 means the
// default organization) and checks its tenant quota. Spawns in one organization so take
// turns for the few milliseconds of the insert, which makes the quota exact.
func lockOrgForSpawn(ctx context.Context, tx pgx.Tx, orgID int64) (int64, error) {
	var maxTenants int
	var err error
	if orgID == 0 {
		err = tx.QueryRow(ctx, `SELECT id, max_tenants FROM organizations WHERE name = 'default' FOR UPDATE`).Scan(&orgID, &maxTenants)
	} else {
		err = tx.QueryRow(ctx, `SELECT id, max_tenants FROM organizations WHERE id = $1 FOR UPDATE`, orgID).Scan(&orgID, &maxTenants)
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, httpx.NotFound(fmt.Sprintf("organization %d (list them with GET /api/v1/orgs)", orgID))
	}
	if err != nil {
		return 0, fmt.Errorf("lock organization: %w", err)
	}
	var live int
	if err := tx.QueryRow(ctx, `SELECT count(*) FROM environments WHERE org_id = $1 AND status <> 'destroyed'`, orgID).Scan(&live); err != nil {
		return 0, fmt.Errorf("count tenants: %w", err)
	}
	if live >= maxTenants {
		return 0, &httpx.Error{Status: http.StatusConflict, Code: "tenant_limit",
			Message: fmt.Sprintf("organization %d has %d live tenants, its limit; destroy one first", orgID, live)}
	}
	return orgID, nil
}

// writeEvent writes one event about tenant envID to the outbox.
func writeEvent(ctx context.Context, tx pgx.Tx, subject, typ string, envID int64, requestID string, data any) error {
	env, err := events.NewEnvelope(eventSource, typ, strconv.FormatInt(envID, 10), requestID, data)
	if err != nil {
		return err
	}
	return outbox.Write(ctx, tx, subject, env)
}

// waitFor waits up to wait until tenant envID's status satisfies done, from the lifecycle
// facts on sub and from the database (read first, after the subscription is surely in place,
// and again every recheckInterval in case core NATS dropped a fact). It reports whether the
// status settled in time; it returns an error only when the request itself ended.
func (h *tenantAPI) waitFor(ctx context.Context, sub *nats.Subscription, envID int64, done func(status string) bool, wait time.Duration) (bool, error) {
	deadline := time.Now().Add(wait)
	fctx, cancel := context.WithTimeout(ctx, recheckInterval)
	err := h.s.deps.NC.FlushWithContext(fctx)
	cancel()
	if err != nil && ctx.Err() != nil {
		return false, ctx.Err()
	}
	for {
		var status string
		if err := h.s.deps.Pool.QueryRow(ctx, `SELECT status FROM environments WHERE id = $1`, envID).Scan(&status); err != nil {
			return false, fmt.Errorf("read tenant status: %w", err)
		}
		if done(status) {
			return true, nil
		}
		for {
			remaining := time.Until(deadline)
			if remaining <= 0 {
				return false, nil
			}
			mctx, cancel := context.WithTimeout(ctx, min(remaining, recheckInterval))
			m, err := sub.NextMsgWithContext(mctx)
			cancel()
			if ctx.Err() != nil {
				return false, ctx.Err()
			}
			if err != nil {
				break // Time to read the database again.
			}
			env, err := events.Decode(m.Data)
			if err != nil {
				continue
			}
			if fact, err := events.DataAs[events.TenantLifecycle](env); err == nil && done(string(fact.State)) {
				return true, nil
			}
		}
	}
}

// waitParams reads ?async= and ?wait=.
func waitParams(c echo.Context) (async bool, wait time.Duration, err error) {
	if async, err = boolParam(c, "async"); err != nil {
		return false, 0, err
	}
	wait = defaultWait
	if s := c.QueryParam("wait"); s != "" {
		wait, err = time.ParseDuration(s)
		if err != nil || wait < time.Second || wait > maxWait {
			return false, 0, httpx.BadRequest("wait %q is not valid: use a duration from 1s to %s, such as 30s (default %s)", s, maxWait, defaultWait)
		}
	}
	return async, wait, nil
}

func boolParam(c echo.Context, name string) (bool, error) {
	switch s := c.QueryParam(name); s {
	case "", "false", "0":
		return false, nil
	case "true", "1":
		return true, nil
	default:
		return false, httpx.BadRequest("%s %q is not valid: use true or false", name, s)
	}
}

// envIDParam reads the :envId path parameter.
func envIDParam(c echo.Context) (int64, error) {
	s := c.Param("envId")
	id, err := strconv.ParseInt(s, 10, 64)
	if err != nil || id <= 0 {
		return 0, httpx.BadRequest("envId %q is not valid: use the positive integer the spawn answered with", s)
	}
	return id, nil
}

// status answers the tenant's recorded state merged with its container's live state, which
// the provisioner reads from the engine. When no provisioner answers, the recorded state is
// answered with containerError saying so.
func (h *tenantAPI) status(c echo.Context) error {
	ctx := c.Request().Context()
	envID, err := envIDParam(c)
	if err != nil {
		return err
	}
	v, err := h.loadTenant(ctx, envID)
	if err != nil {
		return err
	}
	if v.Status != string(events.StateDestroyed) {
		st, err := h.live.Status(ctx, envID)
		switch {
		case err == nil:
			v.Container = &st
		case errors.Is(err, live.ErrUnavailable):
			v.ContainerError = "no provisioner answered; the state shown is the last one recorded"
		default:
			h.s.logger.Warn("live status", "envId", envID, "err", err, "request_id", httpx.RequestID(c))
			v.ContainerError = "the container's live state could not be read; the state shown is the last one recorded"
		}
	}
	return c.JSON(http.StatusOK, map[string]any{"success": true, "tenant": v})
}

// logs answers the tenant's container output as plain text: the last ?tail= lines (100 by
// default), from ?since= (an RFC 3339 time or a duration back from now), with ?timestamps=.
// With ?follow=true it keeps streaming until the container stops, the client leaves or the
// server shuts down. A tenant without a container (destroyed, or failed at spawn) answers its
// archived last logs; X-Log-Source says which it is. A stream that breaks off after it began
// says why in the X-Log-Error trailer.
func (h *tenantAPI) logs(c echo.Context) error {
	ctx := c.Request().Context()
	envID, err := envIDParam(c)
	if err != nil {
		return err
	}
	req := live.LogsRequest{EnvID: envID, Tail: defaultTail}
	if s := c.QueryParam("tail"); s != "" {
		if req.Tail, err = strconv.Atoi(s); err != nil || req.Tail < 1 || req.Tail > maxTail {
			return httpx.BadRequest("tail %q is not valid: use a number of lines from 1 to %d (default %d)", s, maxTail, defaultTail)
		}
	}
	if s := c.QueryParam("since"); s != "" {
		if req.Since, err = sinceParam(s); err != nil {
			return err
		}
	}
	if req.Follow, err = boolParam(c, "follow"); err != nil {
		return err
	}
	if req.Timestamps, err = boolParam(c, "timestamps"); err != nil {
		return err
	}
	v, err := h.loadTenant(ctx, envID)
	if err != nil {
		return err
	}
	if v.Status == string(events.StateDestroyed) {
		return h.archivedLogs(c, envID, req.Tail)
	}

	// The stream ends when the server starts shutting down, not only when the client goes.
	// The channel is taken here: echo reuses the request's context once the handler returns.
	draining := httpx.Draining(ctx)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-draining:
			cancel()
		case <-ctx.Done():
		}
	}()
	stream, err := h.live.Logs(ctx, req)
	switch {
	case errors.Is(err, live.ErrNotFound):
		return h.archivedLogs(c, envID, req.Tail)
	case errors.Is(err, live.ErrUnavailable):
		return httpx.Unavailable("the provisioner, which reads container logs,")
	case err != nil:
		return err
	}
	defer func() { _ = stream.Close() }()

	w := c.Response()
	w.Header().Set(echo.HeaderContentType, "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Log-Source", "container")
	w.Header().Set("Trailer", "X-Log-Error")
	w.WriteHeader(http.StatusOK)
	w.Flush()
	buf := make([]byte, 32<<10)
	for {
		n, rerr := stream.Read(buf)
		if n > 0 {
			if _, err := w.Write(buf[:n]); err != nil {
				return nil // The client left.
			}
			w.Flush()
		}
		if rerr == nil {
			continue
		}
		if !errors.Is(rerr, io.EOF) && ctx.Err() == nil {
			w.Header().Set("X-Log-Error", rerr.Error())
			h.s.logger.Warn("log stream broke off", "envId", envID, "err", rerr, "request_id", httpx.RequestID(c))
		}
		return nil
	}
}

// archivedLogs answers the last logs archived when the tenant's container was removed.
func (h *tenantAPI) archivedLogs(c echo.Context, envID int64, tail int) error {
	var logs []byte
	err := h.s.deps.Pool.QueryRow(c.Request().Context(), `
		SELECT logs FROM tenant_logs WHERE env_id = $1 ORDER BY id DESC LIMIT 1`, envID).Scan(&logs)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("read archived logs: %w", err)
	}
	c.Response().Header().Set("X-Log-Source", "archive")
	c.Response().Header().Set("X-Content-Type-Options", "nosniff")
	return c.Blob(http.StatusOK, "text/plain; charset=utf-8", lastLines(logs, tail))
}

// lastLines returns the last n lines of b.
func lastLines(b []byte, n int) []byte {
	b = bytes.TrimRight(b, "\n")
	if len(b) == 0 {
		return nil
	}
	i := len(b)
	for range n {
		j := bytes.LastIndexByte(b[:i], '\n')
		if j < 0 {
			return append(b, '\n')
		}
		i = j
	}
	return append(b[i+1:], '\n')
}

// sinceParam reads ?since=: an RFC 3339 time, or a duration back from now.
func sinceParam(s string) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil && !t.After(time.Now().Add(time.Minute)) {
		return t, nil
	}
	if d, err := time.ParseDuration(s); err == nil && d > 0 && d <= 366*24*time.Hour {
		return time.Now().Add(-d), nil
	}
	return time.Time{}, httpx.BadRequest("since %q is not valid: use an RFC 3339 time such as 2024-01-15T10:00:00Z, or a duration back from now such as 15m", s)
}

// destroy marks the tenant for destruction and sends tenant.destroy in one transaction; the
// provisioner stops and removes its container, archives its logs, frees its port and marks
// it destroyed. Unless ?async=true it waits (?wait=, 60s by default) for that. Destroying a
// destroyed tenant answers 200 at once, and still has the provisioner check that nothing of
// it is left.
func (h *tenantAPI) destroy(c echo.Context) error {
	ctx := c.Request().Context()
	envID, err := envIDParam(c)
	if err != nil {
		return err
	}
	async, wait, err := waitParams(c)
	if err != nil {
		return err
	}
	requestID := httpx.RequestID(c)
	var sub *nats.Subscription
	var already bool
	err = h.s.deps.Outbox.Tx(ctx, func(tx pgx.Tx) error {
		var orgID int64
		var status string
		err := tx.QueryRow(ctx, `
			UPDATE environments SET desired_status = 'destroyed',
				updated_at = CASE WHEN desired_status = 'destroyed' THEN updated_at ELSE now() END
			WHERE id = $1 RETURNING org_id, status`, envID).Scan(&orgID, &status)
		if errors.Is(err, pgx.ErrNoRows) {
			return httpx.NotFound(fmt.Sprintf("tenant %d", envID))
		}
		if err != nil {
			return fmt.Errorf("mark tenant for destruction: %w", err)
		}
		already = status == string(events.StateDestroyed)
		// The tenant's keys stop working now, not once its container is gone.
		if _, err := tx.Exec(ctx, `UPDATE tenant_keys SET revoked_at = now() WHERE env_id = $1 AND revoked_at IS NULL`, envID); err != nil {
			return fmt.Errorf("revoke tenant keys: %w", err)
		}
		if err := writeEvent(ctx, tx, events.SubjectTenantDestroy, events.TypeTenantDestroy, envID, requestID,
			events.TenantDestroy{EnvID: envID, OrgID: orgID}); err != nil {
			return err
		}
		if !async && !already {
			if sub, err = h.s.deps.NC.SubscribeSync(events.LifecycleFilter(events.StateDestroyed, envID)); err != nil {
				return fmt.Errorf("subscribe to lifecycle facts: %w", err)
			}
		}
		return nil
	})
	if sub != nil {
		defer func() { _ = sub.Unsubscribe() }()
	}
	if err != nil {
		return err
	}
	h.s.logger.Info("tenant destroy accepted", "envId", envID, "request_id", requestID)

	code := http.StatusAccepted
	var message string
	switch {
	case already:
		code = http.StatusOK
	case !async:
		settled, err := h.waitFor(ctx, sub, envID, func(st string) bool { return st == string(events.StateDestroyed) }, wait)
		if ctx.Err() != nil {
			return nil // The client left; the destroy goes on without it.
		}
		if err != nil {
			return err
		}
		if settled {
			code = http.StatusOK
		} else {
			message = fmt.Sprintf("still being destroyed after %s; follow it with GET /api/v1/tenant/%d/status", wait, envID)
		}
	}
	v, err := h.loadTenant(ctx, envID)
	if err != nil {
		return err
	}
	body := map[string]any{"success": true, "tenant": v}
	if message != "" {
		body["message"] = message
	}
	return c.JSON(code, body)
}

// list answers tenants, newest first, filtered by ?orgId= and ?status= (a comma list of
// states, or "all"; by default every state but destroyed), a page of ?limit= at a time;
// nextCursor, when set, is the ?cursor= of the next page.
func (h *tenantAPI) list(c echo.Context) error {
	ctx := c.Request().Context()
	var orgID int64
	if s := c.QueryParam("orgId"); s != "" {
		id, err := strconv.ParseInt(s, 10, 64)
		if err != nil || id <= 0 {
			return httpx.BadRequest("orgId %q is not valid: use the id of an organization (GET /api/v1/orgs)", s)
		}
		orgID = id
	}
	statuses, err := statusFilter(c.QueryParam("status"))
	if err != nil {
		return err
	}
	limit, before, err := pageParams(c)
	if err != nil {
		return err
	}
	rows, err := h.s.deps.Pool.Query(ctx, `SELECT `+tenantViewColumns+` FROM environments
		WHERE ($1 = 0 OR org_id = $1) AND status = ANY($2) AND ($3 = 0 OR id < $3)
		ORDER BY id DESC LIMIT $4`, orgID, statuses, before, limit+1)
	if err != nil {
		return fmt.Errorf("list tenants: %w", err)
	}
	tenants, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (tenantView, error) { return scanTenantView(r) })
	if err != nil {
		return fmt.Errorf("list tenants: %w", err)
	}
	var next *string
	if len(tenants) > limit {
		tenants = tenants[:limit]
		cur := encodeCursor(tenants[limit-1].EnvID)
		next = &cur
	}
	return c.JSON(http.StatusOK, map[string]any{"success": true, "tenants": tenants, "nextCursor": next})
}

var allStatuses = []string{
	string(events.StateProvisioning), string(events.StateRunning), string(events.StateUnhealthy),
	string(events.StateStopped), string(events.StateError), string(events.StateDestroyed),
}

// statusFilter reads ?status=.
func statusFilter(s string) ([]string, error) {
	switch s {
	case "":
		return allStatuses[:len(allStatuses)-1], nil
	case "all":
		return allStatuses, nil
	}
	var out []string
	for st := range strings.SplitSeq(s, ",") {
		if !slices.Contains(allStatuses, st) {
			return nil, httpx.BadRequest("status %q is not valid: use a comma list of %s, or all", st, strings.Join(allStatuses, ", "))
		}
		out = append(out, st)
	}
	return out, nil
}

// pageParams reads ?limit= and ?cursor=. A cursor is opaque to clients; it holds the last id
// of the previous page.
func pageParams(c echo.Context) (limit int, before int64, err error) {
	limit = defaultPageSize
	if s := c.QueryParam("limit"); s != "" {
		if limit, err = strconv.Atoi(s); err != nil || limit < 1 || limit > maxPageSize {
			return 0, 0, httpx.BadRequest("limit %q is not valid: use 1 to %d (default %d)", s, maxPageSize, defaultPageSize)
		}
	}
	if s := c.QueryParam("cursor"); s != "" {
		if before, err = decodeCursor(s); err != nil {
			return 0, 0, httpx.BadRequest("cursor %q is not valid: pass the nextCursor of the previous page as it is", s)
		}
	}
	return limit, before, nil
}

const cursorPrefix = "v1:"

func encodeCursor(id int64) string {
	return base64.RawURLEncoding.EncodeToString([]byte(cursorPrefix + strconv.FormatInt(id, 10)))
}

func decodeCursor(s string) (int64, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(s) > 64 {
		return 0, errors.New("malformed cursor")
	}
	rest, ok := strings.CutPrefix(string(b), cursorPrefix)
	id, err := strconv.ParseInt(rest, 10, 64)
	if !ok || err != nil || id <= 0 {
		return 0, errors.New("malformed cursor")
	}
	return id, nil
}

// decodeBody decodes a JSON body strictly: unknown fields and trailing data are errors that
// say what was wrong.
func decodeBody(c echo.Context, v any) error {
	dec := json.NewDecoder(c.Request().Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var tooLarge *http.MaxBytesError
		switch {
		case errors.As(err, &tooLarge):
			return httpx.Errorf(http.StatusRequestEntityTooLarge, "too_large", "request body is over the limit of %d bytes", tooLarge.Limit)
		case errors.Is(err, io.EOF):
			return httpx.BadRequest("request body is empty: send a JSON object")
		default:
			return httpx.BadRequest("request body is not valid JSON for this endpoint: %s", strings.TrimPrefix(err.Error(), "json: "))
		}
	}
	if dec.More() {
		return httpx.BadRequest("request body has data after the JSON object")
	}
	return nil
}

// isUniqueViolation reports whether err is PostgreSQL refusing a duplicate key of constraint.
func isUniqueViolation(err error, constraint string) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "23505" && pgErr.ConstraintName == constraint
}
