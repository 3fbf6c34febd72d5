package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"

	"github.com/convergence-dev/convergence/services/converger/llm"
)

// Config tunes the engine. The zero value of a field means its default from DefaultConfig.
type Config struct {
	// Limits are the defaults and bounds applied to every task.
	Limits Limits
	// ConvergeScore is the lowest round score that can converge. Default 80.
	ConvergeScore int
	// ConvergeAgreement is the lowest agreement rating, of either agent, that can converge.
	// It is also the rating at which a round-one agreement without issues or concessions
	// counts as empty and forces a critique round. Default 80.
	ConvergeAgreement int
	// StalemateDelta: from round three, a score that moved by less than this many points
	// since the previous round is a stalemate. Default 2.
	StalemateDelta int
	// TurnMaxTokens caps the output of each agent turn and is the output part of a turn's
	// projected cost. Default 1500.
	TurnMaxTokens int64
	// SynthesisMaxTokens caps the output of the synthesis. Default 3000.
	SynthesisMaxTokens int64
}

// DefaultConfig returns the configuration used for zero fields.
func DefaultConfig() Config {
	return Config{
		Limits:             DefaultLimits(),
		ConvergeScore:      80,
		ConvergeAgreement:  80,
		StalemateDelta:     2,
		TurnMaxTokens:      1500,
		SynthesisMaxTokens: 3000,
	}
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	c.Limits = c.Limits.WithDefaults()
	if c.ConvergeScore == 0 {
		c.ConvergeScore = d.ConvergeScore
	}
	if c.ConvergeAgreement == 0 {
		c.ConvergeAgreement = d.ConvergeAgreement
	}
	if c.StalemateDelta == 0 {
		c.StalemateDelta = d.StalemateDelta
	}
	if c.TurnMaxTokens == 0 {
		c.TurnMaxTokens = d.TurnMaxTokens
	}
	if c.SynthesisMaxTokens == 0 {
		c.SynthesisMaxTokens = d.SynthesisMaxTokens
	}
	return c
}

// Validate says what is wrong with c.
func (c Config) Validate() error {
	c = c.withDefaults()
	if err := c.Limits.Validate(); err != nil {
		return fmt.Errorf("limits: %w", err)
	}
	switch {
	case c.ConvergeScore < 1 || c.ConvergeScore > 100:
		return fmt.Errorf("converge score %d: must be from 1 to 100", c.ConvergeScore)
	case c.ConvergeAgreement < 1 || c.ConvergeAgreement > 100:
		return fmt.Errorf("converge agreement %d: must be from 1 to 100", c.ConvergeAgreement)
	case c.StalemateDelta < 0 || c.StalemateDelta > 100:
		return fmt.Errorf("stalemate delta %d: must be from 0 to 100", c.StalemateDelta)
	case c.TurnMaxTokens < 1 || c.SynthesisMaxTokens < 1:
		return errors.New("turn and synthesis max tokens must be positive")
	}
	return nil
}

// Engine runs convergence tasks against one provider. It holds no per-task state: one Engine
// runs any number of tasks concurrently, and there is nothing to start or close.
type Engine struct {
	cfg       Config
	provider  llm.Provider
	log       *slog.Logger
	turn      *llm.Schema
	synthesis *llm.Schema
}

// New builds an Engine. Wrap provider in llm.Retrying to retry rate limits and server errors.
func New(cfg Config, provider llm.Provider, logger *slog.Logger) (*Engine, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("engine config: %w", err)
	}
	if provider == nil {
		return nil, errors.New("engine: nil provider")
	}
	if logger == nil {
		return nil, errors.New("engine: nil logger")
	}
	return &Engine{
		cfg:      cfg.withDefaults(),
		provider: provider,
		log:      logger.With("component", "engine", "provider", provider.Name()),
		turn: &llm.Schema{
			Name:        turnSchemaName,
			Description: "One turn of a two-agent discussion: the agent's proposal and where it stands.",
			JSON:        json.RawMessage(turnSchemaJSON),
		},
		synthesis: &llm.Schema{
			Name:        synthesisSchemaName,
			Description: "The final answer merged from both agents' positions.",
			JSON:        json.RawMessage(synthesisSchemaJSON),
		},
	}, nil
}

// Limits returns the limits the engine applies to tasks, with defaults filled in, so a caller
// can validate a task up front with Limits().Normalize.
func (e *Engine) Limits() Limits { return e.cfg.Limits }

// ErrInvalidResume is returned by Run when Options.Resume is not a valid turn sequence.
var ErrInvalidResume = errors.New("invalid resume turns")

// errTaskTimeout is the cancellation cause of a task's own timeout.
var errTaskTimeout = errors.New("task timeout")

// Run converges task and blocks until a stop rule fires, the task times out, ctx is done, or
// the run fails.
//
// Every stop reason, including timeout and cancellation, is a normal end: Run returns the
// Result with a nil error. Run returns an error for an invalid task (matching
// ErrInvalidTask), invalid resume turns (ErrInvalidResume), a provider failure that retrying
// did not fix (matching the llm error kinds), or an error from a callback; the Result then
// holds the rounds completed and the usage spent before the failure, with an empty
// StopReason, so usage is never lost.
func (e *Engine) Run(ctx context.Context, task Task, opts Options) (Result, error) {
	task, err := e.cfg.Limits.Normalize(task)
	if err != nil {
		return Result{}, err
	}
	ctx, cancel := context.WithTimeoutCause(ctx, task.Timeout, errTaskTimeout)
	defer cancel()
	r := newRun(e, task, opts)
	reason, err := r.execute(ctx)
	return r.result(reason), err
}
