package api

import (
	"bytes"
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"time"
	"unicode"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/convergence-dev/convergence/internal/httpx"
	"github.com/convergence-dev/convergence/internal/periodic"
	"github.com/convergence-dev/convergence/internal/taskspec"
	"github.com/convergence-dev/convergence/internal/telemetry"
	contract "github.com/convergence-dev/convergence/pkg/api"
	"github.com/convergence-dev/convergence/pkg/money"
)

// builtinPlans are the plans every install has: free, pro, enterprise, and unlimited, the
// default organization's. A plan file replaces the ones it names and adds others.
//
//go:embed plans.json
var builtinPlans []byte

// freePlan is the plan of an organization created without one, and the limits of an
// organization whose plan a changed plan file no longer has.
const freePlan = "free"

// planEntry is a plan as a plan file writes it. A field left out sets no limit of the plan's
// own: the platform's flags bound it.
type planEntry struct {
	Name              string        `json:"name"`
	Note              string        `json:"note"`
	MaxTenants        *int          `json:"maxTenants"`
	RequestsPerMinute *float64      `json:"requestsPerMinute"`
	Burst             *int          `json:"burst"`
	TasksInFlight     *int          `json:"tasksInFlight"`
	MaxRounds         *int          `json:"maxRounds"`
	Models            []string      `json:"models"`
	MonthlySpendLimit *money.Micros `json:"monthlySpendLimit"`
}

// planLimits are what an organization on a plan may do, the platform's bounds filled in where
// the plan sets none. MaxTenants is per organization; the rate, tasks in flight and rounds are
// per tenant (per task for rounds).
type planLimits struct {
	Plan              string
	MaxTenants        int
	RequestsPerMinute float64
	Burst             int
	TasksInFlight     int
	MaxRounds         int
	Models            []string
	MonthlySpendLimit *money.Micros
}

// view is l as the API shows it.
func (l planLimits) view() contract.PlanLimits {
	v := contract.PlanLimits{
		Plan: l.Plan, MaxTenants: l.MaxTenants, RequestsPerMinute: l.RequestsPerMinute, Burst: l.Burst,
		TasksInFlight: l.TasksInFlight, MaxRounds: l.MaxRounds, Models: l.Models,
	}
	if l.MonthlySpendLimit != nil {
		amount := l.MonthlySpendLimit.String()
		v.MonthlySpendLimit = &amount
	}
	return v
}

// allows reports whether the plan lets a task ask for model by name. A task that names no
// model gets the provider's default, which the operator chose, on every plan.
func (l planLimits) allows(model string) bool {
	if model == "" {
		return true
	}
	return slices.ContainsFunc(l.Models, func(pattern string) bool { return globMatch(strings.ToLower(pattern), strings.ToLower(model)) })
}

// globMatch reports whether s matches pattern, in which * stands for any run of characters
// (slashes too, which model names such as "meta-llama/llama-3" have) and every other
// character for itself.
func globMatch(pattern, s string) bool {
	parts := strings.Split(pattern, "*")
	if len(parts) == 1 {
		return pattern == s
	}
	if !strings.HasPrefix(s, parts[0]) {
		return false
	}
	s = s[len(parts[0]):]
	for _, p := range parts[1 : len(parts)-1] {
		i := strings.Index(s, p)
		if i < 0 {
			return false
		}
		s = s[i+len(p):]
	}
	return strings.HasSuffix(s, parts[len(parts)-1])
}

// quotaExceeded is the answer to a request over a count its plan allows; the message names the
// quota, the plan and the way out. Rates are answered 429 instead (ratelimit.go).
func quotaExceeded(format string, args ...any) *httpx.Error {
	return httpx.Errorf(http.StatusForbidden, "quota_exceeded", format, args...)
}

// planTable is a loaded set of plans, by name.
type planTable struct {
	byName map[string]planLimits
	names  []string // sorted, for messages
}

// The bounds a plan file's entries are checked against.
var planNameRE = regexp.MustCompile(`^[a-z][a-z0-9-]{0,62}$`)

const (
	maxPlanRate   = 1_000_000 // requests per minute, and burst
	maxPlanTasks  = 1_000_000
	maxPlanModels = 100
)

// parsePlans reads the built-in plans and then file (nil: none) over them, and fills each
// plan's gaps from platform. Errors name the entry that is wrong; unknown fields are errors, so
// a misspelt limit is never read as a missing one.
func parsePlans(file []byte, platform planLimits, roundsCap int) (*planTable, error) {
	t := &planTable{byName: map[string]planLimits{}}
	for _, src := range [][]byte{builtinPlans, file} {
		if src == nil {
			continue
		}
		dec := json.NewDecoder(bytes.NewReader(src))
		dec.DisallowUnknownFields()
		var f struct {
			Note  string      `json:"note"`
			Plans []planEntry `json:"plans"`
		}
		if err := dec.Decode(&f); err != nil {
			return nil, fmt.Errorf("decode: %w", err)
		}
		if dec.More() {
			return nil, errors.New("decode: data after the plans")
		}
		seen := map[string]bool{}
		for i, p := range f.Plans {
			l, err := p.limits(platform, roundsCap)
			if err != nil {
				return nil, fmt.Errorf("plans[%d] (%s): %w", i, p.Name, err)
			}
			if seen[p.Name] {
				return nil, fmt.Errorf("plans[%d] (%s): listed twice", i, p.Name)
			}
			seen[p.Name] = true
			t.byName[p.Name] = l
		}
	}
	for name := range t.byName {
		t.names = append(t.names, name)
	}
	slices.Sort(t.names)
	return t, nil
}

// limits checks the entry and returns its limits, the platform's where it sets none.
func (p planEntry) limits(platform planLimits, roundsCap int) (planLimits, error) {
	l := platform
	l.Plan = p.Name
	switch {
	case !planNameRE.MatchString(p.Name):
		return l, errors.New(`"name" must be lower-case letters, digits and dashes, starting with a letter, such as "team-2026"`)
	case p.MaxTenants != nil && (*p.MaxTenants < 0 || *p.MaxTenants > maxMaxTenants):
		return l, fmt.Errorf(`"maxTenants" must be 0 to %d`, maxMaxTenants)
	case p.RequestsPerMinute != nil && !(*p.RequestsPerMinute > 0 && *p.RequestsPerMinute <= maxPlanRate):
		return l, fmt.Errorf(`"requestsPerMinute" must be above 0 and at most %d`, maxPlanRate)
	case p.Burst != nil && (*p.Burst < 1 || *p.Burst > maxPlanRate):
		return l, fmt.Errorf(`"burst" must be 1 to %d`, maxPlanRate)
	case p.TasksInFlight != nil && (*p.TasksInFlight < 1 || *p.TasksInFlight > maxPlanTasks):
		return l, fmt.Errorf(`"tasksInFlight" must be 1 to %d`, maxPlanTasks)
	case p.MaxRounds != nil && (*p.MaxRounds < taskspec.MinRounds || *p.MaxRounds > roundsCap):
		return l, fmt.Errorf(`"maxRounds" must be %d to %d, the platform's cap`, taskspec.MinRounds, roundsCap)
	case p.Models != nil && (len(p.Models) == 0 || len(p.Models) > maxPlanModels):
		return l, fmt.Errorf(`"models" must list 1 to %d model names or patterns such as "gpt-4o*"; leave it out to allow every model`, maxPlanModels)
	}
	for _, m := range p.Models {
		if m == "" || len(m) > maxModelBytes || strings.IndexFunc(m, func(r rune) bool { return unicode.IsSpace(r) || !unicode.IsPrint(r) }) >= 0 {
			return l, fmt.Errorf(`"models": %q is not a model name or pattern of at most %d printable characters without spaces`, m, maxModelBytes)
		}
	}
	if p.MaxTenants != nil {
		l.MaxTenants = *p.MaxTenants
	}
	if p.RequestsPerMinute != nil {
		l.RequestsPerMinute = *p.RequestsPerMinute
	}
	if p.Burst != nil {
		l.Burst = *p.Burst
	}
	if p.TasksInFlight != nil {
		l.TasksInFlight = *p.TasksInFlight
	}
	if p.MaxRounds != nil {
		l.MaxRounds = *p.MaxRounds
	}
	if p.Models != nil {
		l.Models = p.Models
	}
	l.MonthlySpendLimit = p.MonthlySpendLimit
	return l, nil
}

// plans holds the plans in force: the built-in ones and the plan file's, reloaded when the
// file changes. A file that does not load leaves the plans in force.
type plans struct {
	file      string
	platform  planLimits
	roundsCap int
	logger    *slog.Logger

	current      atomic.Pointer[planTable]
	badFile      [sha256.Size]byte // the content of the last file that did not load
	reloadErrors prometheus.Counter
}

// newPlans loads the built-in plans and file ("" for none) over them.
func newPlans(file string, platform planLimits, roundsCap int, logger *slog.Logger, reg prometheus.Registerer) (*plans, error) {
	p := &plans{file: file, platform: platform, roundsCap: roundsCap, logger: logger,
		reloadErrors: telemetry.Register(reg, prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "convergence", Subsystem: "api", Name: "plan_reload_errors_total",
			Help: "Plan file changes that did not load; the plans in force stayed.",
		})),
	}
	var b []byte
	if file != "" {
		var err error
		if b, err = os.ReadFile(file); err != nil {
			return nil, fmt.Errorf("read plan file: %w", err)
		}
	}
	t, err := parsePlans(b, platform, roundsCap)
	if err != nil {
		return nil, fmt.Errorf("plan file %s: %w", file, err)
	}
	p.current.Store(t)
	return p, nil
}

// limits returns the limits of plan name; a plan the plans in force lack (a plan file dropped
// it) has the free plan's.
func (p *plans) limits(name string) planLimits {
	t := p.current.Load()
	if l, ok := t.byName[name]; ok {
		return l
	}
	l := t.byName[freePlan]
	l.Plan = name
	return l
}

// check says what is wrong with plan name, or "" when the plans in force have it.
func (p *plans) check(name string) string {
	t := p.current.Load()
	if _, ok := t.byName[name]; ok {
		return ""
	}
	return fmt.Sprintf("plan %q is not valid: use one of %s (default %s)", name, strings.Join(t.names, ", "), freePlan)
}

// watch reloads the plan file every interval when its content changed, until ctx is done.
func (p *plans) watch(ctx context.Context, interval time.Duration) {
	last := sha256.Sum256(nil)
	if b, err := os.ReadFile(p.file); err == nil {
		last = sha256.Sum256(b)
	}
	periodic.Every(ctx, interval, func() {
		b, err := os.ReadFile(p.file)
		sum := sha256.Sum256(b)
		if sum == last || sum == p.badFile {
			return // unchanged, or the same content that did not load
		}
		if err == nil {
			var table *planTable
			if table, err = parsePlans(b, p.platform, p.roundsCap); err == nil {
				p.current.Store(table)
				last = sum
				p.logger.Info("plans reloaded", "file", p.file, "plans", strings.Join(table.names, ","))
				return
			}
		}
		p.badFile = sum
		p.reloadErrors.Inc()
		p.logger.Error("plan file not reloaded; the plans in force stay", "file", p.file, "err", err)
	})
}
