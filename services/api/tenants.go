package api

import (
	"bytes"
	"context"
	"encoding/base64"
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
	"github.com/labstack/echo/v4"
	"github.com/nats-io/nats.go"

	"github.com/convergence-dev/convergence/internal/httpx"
	"github.com/convergence-dev/convergence/internal/live"
	"github.com/convergence-dev/convergence/internal/natsrpc"
	"github.com/convergence-dev/convergence/internal/outbox"
	contract "github.com/convergence-dev/convergence/pkg/api"
	"github.com/convergence-dev/convergence/pkg/events"
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
	admin.POST("/tenant/spawn", h.spawn, s.audited(auditTenantSpawn), s.idempotent)
	admin.GET("/tenant", h.list)
	admin.GET("/templates", h.templates)
	admin.GET("/tenant/:envId/status", h.status)
	admin.GET("/tenant/:envId/logs", h.logs)
	admin.DELETE("/tenant/:envId", h.destroy, s.audited(auditTenantDestroy))
	h.keyRoutes(admin) // tenant_keys.go
	s.orgRoutes(admin)
}

// templates answers the templates a spawn may name, each with whether the provisioner can run
// it now and, if not, why.
func (h *tenantAPI) templates(c echo.Context) error {
	ts, err := natsrpc.Call[events.TemplatesQuery, events.Templates](c.Request().Context(), h.s.deps.NC, events.SubjectTemplates, events.TemplatesQuery{})
	if err != nil {
		return fromProvisioner(err)
	}
	return c.JSON(http.StatusOK, map[string]any{"success": true, "templates": ts.Templates})
}

// tenantView is the provisioner's view of a tenant as the API shows it. The spawn answer adds
// its key (APIKey), the status answer its container's live state (Container, or ContainerError
// saying why that is missing).
func tenantView(v events.TenantView) contract.Tenant {
	t := contract.Tenant{
		EnvID: v.EnvID, OrgID: v.OrgID, Name: v.Name, Status: contract.TenantStatus(v.Status), DesiredStatus: v.DesiredStatus,
		Health: v.Health, Reason: v.Reason, Port: v.Port, APIKeyPrefix: v.APIKeyPrefix, Language: v.Language,
		Framework: v.Framework, Image: v.Image, Egress: v.Egress, Generation: v.Generation, ContainerName: v.ContainerName,
		CreatedAt: v.CreatedAt, UpdatedAt: v.UpdatedAt, StatusChangedAt: v.StatusChangedAt, DestroyedAt: v.DestroyedAt,
	}
	t.Limits.MemoryMb, t.Limits.Cpus, t.Limits.Pids = v.Limits.MemoryMB, v.Limits.CPUs, v.Limits.PIDs
	return t
}

// containerOf is a container's live state as the API shows it.
func containerOf(st live.Status) contract.TenantContainer {
	return contract.TenantContainer{
		State: st.State, Health: st.Health, ContainerID: st.ContainerID, ContainerName: st.ContainerName, Image: st.Image,
		Port: st.HostPort, Generation: st.Generation, RestartCount: st.RestartCount, StartedAt: st.StartedAt,
		UptimeSeconds: st.UptimeSeconds, CPUPercent: st.CPUPercent, CPULimit: st.CPULimit, MemoryBytes: int64(st.MemoryBytes),
		MemoryLimitBytes: int64(st.MemoryLimitBytes), Pids: int64(st.PIDs), ExitCode: st.ExitCode, OomKilled: st.OOMKilled, Error: st.Error,
	}
}

// loadTenant asks the provisioner for one tenant, answering 404 when there is none.
func (h *tenantAPI) loadTenant(ctx context.Context, envID int64) (contract.Tenant, error) {
	v, err := natsrpc.Call[events.TenantQuery, events.TenantView](ctx, h.s.deps.NC, events.SubjectTenantGet, events.TenantQuery{EnvID: envID})
	if err != nil {
		return contract.Tenant{}, fromProvisioner(err)
	}
	return tenantView(v), nil
}

// fromProvisioner is the HTTP answer to a failed question to the provisioner.
func fromProvisioner(err error) error {
	return fromService(err, "the provisioner, which keeps tenants,")
}

// writeEvent writes one event about tenant envID to the outbox.
func writeEvent(ctx context.Context, tx pgx.Tx, subject, typ string, envID int64, requestID string, data any) error {
	env, err := events.NewEnvelope(eventSource, typ, strconv.FormatInt(envID, 10), requestID, data)
	if err != nil {
		return err
	}
	return outbox.Write(ctx, tx, subject, env)
}

// waitFor waits up to wait until tenant envID's status satisfies done (see Service.await), on
// its lifecycle facts and the provisioner's record.
func (h *tenantAPI) waitFor(ctx context.Context, sub *nats.Subscription, envID int64, done func(status string) bool, wait time.Duration) (bool, error) {
	return h.s.await(ctx, sub, wait, recheckInterval,
		func(m *nats.Msg) bool {
			env, err := events.Decode(m.Data)
			if err != nil {
				return false
			}
			fact, err := events.DataAs[events.TenantLifecycle](env)
			return err == nil && done(string(fact.State))
		},
		func(ctx context.Context) (bool, error) {
			// A provisioner that does not answer leaves the wait to the facts.
			v, err := h.loadTenant(ctx, envID)
			return err == nil && done(string(v.Status)), nil
		})
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
	if v.Status != contract.TenantStatus(events.StateDestroyed) {
		st, err := h.live.Status(ctx, envID)
		switch {
		case err == nil:
			v.Container = containerOf(st)
		case errors.Is(err, live.ErrUnavailable):
			v.ContainerError = "no provisioner answered; the state shown is the last one recorded"
		default:
			h.s.logger.Warn("live status", "envId", envID, "err", err, "request_id", httpx.RequestID(c))
			v.ContainerError = "the container's live state could not be read; the state shown is the last one recorded"
		}
	}
	return c.JSON(http.StatusOK, contract.TenantAnswer{Success: true, Tenant: v})
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
	if string(v.Status) == string(events.StateDestroyed) {
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
	a, err := natsrpc.Call[events.ArchiveQuery, events.Archive](c.Request().Context(), h.s.deps.NC, events.SubjectTenantArchive, events.ArchiveQuery{EnvID: envID})
	if err != nil {
		return fromProvisioner(err)
	}
	logs := a.Logs
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
	orgID, err := h.s.tenantOrg(ctx, envID)
	if err != nil {
		return err
	}
	noteAudit(c, auditFacts{OrgID: orgID})
	// A tenant destroyed already is answered at once; the command still goes, so the
	// provisioner checks that nothing of it is left. Without the provisioner's answer, the
	// destroy goes on all the same.
	v, err := h.loadTenant(ctx, envID)
	already := err == nil && string(v.Status) == string(events.StateDestroyed)
	var sub *nats.Subscription
	if !async && !already {
		if sub, err = h.s.deps.NC.SubscribeSync(events.LifecycleFilter(events.StateDestroyed, envID)); err != nil {
			return httpx.Unavailable("the message bus")
		}
		defer func() { _ = sub.Unsubscribe() }()
	}
	err = h.s.deps.Outbox.Tx(ctx, func(tx pgx.Tx) error {
		// The tenant's keys stop working now, not once its container is gone; a key recorded
		// later is recorded revoked (recordKey).
		if err := lockTenantKeys(ctx, tx, envID); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `
			UPDATE tenant_keys SET revoked_at = coalesce(revoked_at, now()), revoked_reason = 'destroyed'
			WHERE env_id = $1 AND revoked_reason IS DISTINCT FROM 'destroyed'`, envID); err != nil {
			return fmt.Errorf("revoke tenant keys: %w", err)
		}
		return writeEvent(ctx, tx, events.SubjectTenantDestroy, events.TypeTenantDestroy, envID, requestID,
			events.TenantDestroy{EnvID: envID, OrgID: orgID})
	})
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
	if v, err = h.loadTenant(ctx, envID); err != nil {
		return err
	}
	v.DesiredStatus = "destroyed" // The provisioner may not have taken the command yet.
	return c.JSON(code, contract.TenantAnswer{Success: true, Tenant: v, Message: message})
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
	list, err := natsrpc.Call[events.TenantListQuery, events.TenantList](ctx, h.s.deps.NC, events.SubjectTenantList,
		events.TenantListQuery{OrgID: orgID, Statuses: statuses, Before: before, Limit: limit})
	if err != nil {
		return fromProvisioner(err)
	}
	var next *string
	if list.More {
		cur := encodeCursor(list.Tenants[len(list.Tenants)-1].EnvID)
		next = &cur
	}
	tenants := make([]contract.Tenant, len(list.Tenants))
	for i, v := range list.Tenants {
		tenants[i] = tenantView(v)
	}
	return c.JSON(http.StatusOK, contract.TenantList{Success: true, Tenants: tenants, NextCursor: next})
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

// pageOf cuts rows, read with LIMIT limit+1, to one page, and returns it with the ?cursor= of
// the next page (nil on the last page).
func pageOf[T any](rows []T, limit int, id func(T) int64) ([]T, *string) {
	if len(rows) <= limit {
		return rows, nil
	}
	rows = rows[:limit]
	next := encodeCursor(id(rows[limit-1]))
	return rows, &next
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

// decodeBody decodes a JSON body strictly (httpx.DecodeJSON); the body is required.
func decodeBody(c echo.Context, v any) error {
	return httpx.DecodeJSON(c, v, "send a JSON object")
}
