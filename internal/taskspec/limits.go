package taskspec

import (
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"
)

// MinRounds is the fewest rounds a task runs before it can converge: one proposal and one
// answer to its critique.
const MinRounds = 2

// ErrInvalidTask is matched (errors.Is) by every [*TaskError].
var ErrInvalidTask = errors.New("invalid task")

// TaskError says which field of a [Task] is wrong and how to fix it; the API answers it as a
// 400.
type TaskError struct {
	// Field is the field's JSON name, e.g. "maxRounds".
	Field string
	// Problem says what is wrong and what is accepted.
	Problem string
}

// Error says which field is wrong and how.
func (e *TaskError) Error() string { return e.Field + ": " + e.Problem }

// Is makes errors.Is(err, ErrInvalidTask) true.
func (e *TaskError) Is(target error) bool { return target == ErrInvalidTask }

// Limits are the defaults and bounds applied to every [Task]. The zero value of a field
// means its default from DefaultLimits.
type Limits struct {
	// DefaultMaxRounds is used when a task sets no MaxRounds. Default 4.
	DefaultMaxRounds int
	// MaxRoundsCap is the most rounds a task may ask for. Default 10.
	MaxRoundsCap int
	// DefaultTimeout is used when a task sets no Timeout. Default 5m.
	DefaultTimeout time.Duration
	// MaxTimeout is the longest Timeout a task may ask for. Default 30m.
	MaxTimeout time.Duration
	// DefaultTokenBudget is used when a task sets no TokenBudget; 0 means no bound.
	DefaultTokenBudget int64
	// MaxPromptBytes bounds Prompt. Default 32 KiB.
	MaxPromptBytes int
	// MaxContextBytes bounds Context. Default 64 KiB.
	MaxContextBytes int
	// MaxRoleBytes bounds each role. Default 200.
	MaxRoleBytes int
}

// DefaultLimits returns the limits used for zero fields.
func DefaultLimits() Limits {
	return Limits{
		DefaultMaxRounds: 4,
		MaxRoundsCap:     10,
		DefaultTimeout:   5 * time.Minute,
		MaxTimeout:       30 * time.Minute,
		MaxPromptBytes:   32 << 10,
		MaxContextBytes:  64 << 10,
		MaxRoleBytes:     200,
	}
}

// WithDefaults returns l with every zero or negative field set to its default from
// DefaultLimits.
func (l Limits) WithDefaults() Limits {
	d := DefaultLimits()
	if l.DefaultMaxRounds <= 0 {
		l.DefaultMaxRounds = d.DefaultMaxRounds
	}
	if l.MaxRoundsCap <= 0 {
		l.MaxRoundsCap = d.MaxRoundsCap
	}
	if l.DefaultTimeout <= 0 {
		l.DefaultTimeout = d.DefaultTimeout
	}
	if l.MaxTimeout <= 0 {
		l.MaxTimeout = d.MaxTimeout
	}
	if l.MaxPromptBytes <= 0 {
		l.MaxPromptBytes = d.MaxPromptBytes
	}
	if l.MaxContextBytes <= 0 {
		l.MaxContextBytes = d.MaxContextBytes
	}
	if l.MaxRoleBytes <= 0 {
		l.MaxRoleBytes = d.MaxRoleBytes
	}
	return l
}

// Validate says what is wrong with l.
func (l Limits) Validate() error {
	l = l.WithDefaults()
	if l.MaxRoundsCap < MinRounds {
		return fmt.Errorf("max rounds cap %d: must be at least %d", l.MaxRoundsCap, MinRounds)
	}
	if l.DefaultMaxRounds < MinRounds || l.DefaultMaxRounds > l.MaxRoundsCap {
		return fmt.Errorf("default max rounds %d: must be between %d and the cap %d", l.DefaultMaxRounds, MinRounds, l.MaxRoundsCap)
	}
	if l.DefaultTimeout > l.MaxTimeout {
		return fmt.Errorf("default timeout %s: must not exceed the maximum %s", l.DefaultTimeout, l.MaxTimeout)
	}
	if l.DefaultTokenBudget < 0 {
		return fmt.Errorf("default token budget %d: must not be negative", l.DefaultTokenBudget)
	}
	return nil
}

// Normalize validates t and returns it with every default applied: type, roles, max rounds,
// token budget and timeout. Surrounding whitespace is trimmed from the text fields. An
// invalid task returns a [*TaskError] naming the first wrong field. Normalize is pure, so the
// API can run it to reject a request before queueing it.
func (l Limits) Normalize(t Task) (Task, error) {
	l = l.WithDefaults()
	t.Prompt = strings.TrimSpace(t.Prompt)
	t.Context = strings.TrimSpace(t.Context)
	t.AgentARole = strings.TrimSpace(t.AgentARole)
	t.AgentBRole = strings.TrimSpace(t.AgentBRole)
	t.Model = strings.TrimSpace(t.Model)
	switch {
	case t.Prompt == "":
		return t, &TaskError{"prompt", "must not be empty: say what the agents should converge on"}
	case len(t.Prompt) > l.MaxPromptBytes:
		return t, &TaskError{"prompt", fmt.Sprintf("is %d bytes; shorten it to at most %d", len(t.Prompt), l.MaxPromptBytes)}
	case !utf8.ValidString(t.Prompt):
		return t, &TaskError{"prompt", "must be valid UTF-8"}
	case len(t.Context) > l.MaxContextBytes:
		return t, &TaskError{"context", fmt.Sprintf("is %d bytes; shorten it to at most %d", len(t.Context), l.MaxContextBytes)}
	case !utf8.ValidString(t.Context):
		return t, &TaskError{"context", "must be valid UTF-8"}
	}
	if t.Type == "" {
		t.Type = TypeCustom
	}
	if !t.Type.Valid() {
		return t, &TaskError{"type", fmt.Sprintf("%q is not a task type; use one of design, review, decide, plan, analyze, generate, custom", t.Type)}
	}
	defA, defB := t.Type.DefaultRoles()
	if t.AgentARole == "" {
		t.AgentARole = defA
	}
	if t.AgentBRole == "" {
		t.AgentBRole = defB
	}
	if len(t.AgentARole) > l.MaxRoleBytes || !utf8.ValidString(t.AgentARole) {
		return t, &TaskError{"agentARole", fmt.Sprintf("must be valid UTF-8 of at most %d bytes", l.MaxRoleBytes)}
	}
	if len(t.AgentBRole) > l.MaxRoleBytes || !utf8.ValidString(t.AgentBRole) {
		return t, &TaskError{"agentBRole", fmt.Sprintf("must be valid UTF-8 of at most %d bytes", l.MaxRoleBytes)}
	}
	if t.MaxRounds == 0 {
		t.MaxRounds = l.DefaultMaxRounds
	}
	if t.MaxRounds < MinRounds || t.MaxRounds > l.MaxRoundsCap {
		return t, &TaskError{"maxRounds", fmt.Sprintf("is %d; use a value from %d to %d", t.MaxRounds, MinRounds, l.MaxRoundsCap)}
	}
	if t.TokenBudget == 0 {
		t.TokenBudget = l.DefaultTokenBudget
	}
	if t.TokenBudget < 0 {
		return t, &TaskError{"tokenBudget", "must not be negative; use 0 for the default"}
	}
	if t.Timeout == 0 {
		t.Timeout = l.DefaultTimeout
	}
	if t.Timeout < 0 || t.Timeout > l.MaxTimeout {
		return t, &TaskError{"timeout", fmt.Sprintf("is %s; use a positive duration of at most %s", t.Timeout, l.MaxTimeout)}
	}
	return t, nil
}
