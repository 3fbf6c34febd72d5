package api

import (
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/labstack/echo/v4"

	"github.com/convergence-dev/convergence/internal/httpx"
	"github.com/convergence-dev/convergence/internal/taskspec"
	contract "github.com/convergence-dev/convergence/pkg/api"
	"github.com/convergence-dev/convergence/pkg/events"
)

// maxModelBytes bounds the model name.
const maxModelBytes = 128

// decodeConvergeInput reads the request body strictly; every failure says what to fix.
func decodeConvergeInput(c echo.Context) (contract.ConvergeRequest, error) {
	var in contract.ConvergeRequest
	err := httpx.DecodeJSON(c, &in, `send a JSON object with at least a prompt, e.g. {"prompt": "Design a rate limiter"}`)
	return in, err
}

// validated is a request ready to queue: the converge.request without its task and tenant,
// and whether the caller asked for an answer at once.
type validated struct {
	request events.ConvergeRequest
	async   bool
}

// event is the converge.request of v as task id of tenant t.
func (v validated) event(id string, t Tenant) events.ConvergeRequest {
	e := v.request
	e.TaskID, e.EnvID, e.OrgID = id, t.EnvID, t.OrgID
	return e
}

// validate checks in against the platform's limits and the tenant's plan, and returns the
// request to queue: type, roles and max rounds filled in. shortcut is the type an endpoint such
// as /design sets, "" for /converge. What the platform never accepts is a 400; what only the
// plan refuses, a 403 that says so.
func validate(in contract.ConvergeRequest, shortcut taskspec.TaskType, limits taskspec.Limits, plan planLimits) (validated, error) {
	if shortcut != "" {
		if in.Type != "" && string(in.Type) != string(shortcut) {
			return validated{}, httpx.BadRequest("type: this endpoint makes %s tasks; leave type out, or POST to /api/v1/converge for type %q", shortcut, in.Type)
		}
		in.Type = contract.ConvergeRequestType(shortcut)
	}
	var timeout time.Duration
	switch limit := limits.MaxTimeout; {
	case math.IsNaN(in.TimeoutSeconds) || in.TimeoutSeconds < 0:
		return validated{}, httpx.BadRequest("timeoutSeconds: must be positive; leave it out for the default")
	case in.TimeoutSeconds > limit.Seconds():
		return validated{}, httpx.BadRequest("timeoutSeconds: is %s; use at most %s", strconv.FormatFloat(in.TimeoutSeconds, 'f', -1, 64), strconv.FormatFloat(limit.Seconds(), 'f', -1, 64))
	case in.TimeoutSeconds > 0:
		timeout = max(time.Millisecond, time.Duration(in.TimeoutSeconds*float64(time.Second)))
	}
	if len(in.Model) > maxModelBytes || strings.IndexFunc(in.Model, func(r rune) bool { return unicode.IsSpace(r) || !unicode.IsPrint(r) }) >= 0 {
		return validated{}, httpx.BadRequest("model: must be a model name of at most %d printable characters without spaces, e.g. gpt-4o-mini", maxModelBytes)
	}
	if !plan.allows(in.Model) {
		return validated{}, &httpx.Error{Status: http.StatusForbidden, Code: "model_not_allowed",
			Message: fmt.Sprintf("model: %q is not allowed on plan %q, which allows %s; name one of those, leave model out for the default, "+
				"or move the organization to a plan that allows it", in.Model, plan.Plan, strings.Join(plan.Models, ", "))}
	}
	switch {
	case in.MaxRounds == 0:
		in.MaxRounds = min(limits.DefaultMaxRounds, plan.MaxRounds)
	case in.MaxRounds > plan.MaxRounds && in.MaxRounds <= limits.MaxRoundsCap:
		return validated{}, quotaExceeded("maxRounds: %d is more than plan %q allows, %d; ask for fewer, or move the organization to a larger plan",
			in.MaxRounds, plan.Plan, plan.MaxRounds)
	}
	if in.WebhookURL != "" {
		if err := taskspec.ValidateWebhookURL(in.WebhookURL); err != nil {
			return validated{}, httpx.BadRequest("webhookUrl: %v", err)
		}
	}
	t, err := limits.Normalize(taskspec.Task{
		Prompt:      in.Prompt,
		Type:        taskspec.TaskType(in.Type),
		AgentARole:  in.AgentARole,
		AgentBRole:  in.AgentBRole,
		Context:     in.Context,
		MaxRounds:   in.MaxRounds,
		Model:       in.Model,
		TokenBudget: in.TokenBudget,
		Timeout:     timeout,
	})
	var te *taskspec.TaskError
	if errors.As(err, &te) {
		return validated{}, httpx.BadRequest("%s: %s", te.Field, te.Problem)
	}
	if err != nil {
		return validated{}, fmt.Errorf("validate request: %w", err)
	}
	return validated{request: taskspec.Request(t, in.TokenBudget, timeout, in.WebhookURL), async: in.Async}, nil
}

// preference is what a Prefer header (RFC 7240) asks of a converge request.
type preference struct {
	async bool
	wait  time.Duration // 0 when not given
}

// parsePrefer reads "Prefer: respond-async" and "Prefer: wait=<seconds>", in one header or
// several; other preferences are ignored, as the RFC asks.
func parsePrefer(h http.Header) preference {
	var p preference
	for _, line := range h.Values("Prefer") {
		for _, pref := range strings.Split(line, ",") {
			name, value, _ := strings.Cut(strings.TrimSpace(strings.SplitN(pref, ";", 2)[0]), "=")
			switch strings.ToLower(strings.TrimSpace(name)) {
			case "respond-async":
				p.async = true
			case "wait":
				if n, err := strconv.Atoi(strings.Trim(strings.TrimSpace(value), `"`)); err == nil && n >= 0 {
					p.wait = min(time.Duration(n)*time.Second, MaxSyncWait)
				}
			}
		}
	}
	return p
}
