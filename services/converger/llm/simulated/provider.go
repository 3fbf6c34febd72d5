// Package simulated is an offline, deterministic [llm.Provider] that plays both agents of a
// convergence discussion. It is what the platform runs when no provider key is configured,
// and what tests and benchmarks use.
//
// The same request always gets the same reply. A reply is derived from a seed taken from the
// request (the task text and the agent's system prompt) and from the round, which is the
// number of assistant messages in the request plus one. The replying agent's agreement
// follows a [Curve]: it rises per round toward a ceiling, so a scenario converges, stalls or
// never agrees as configured. The proposals are built from sentences shared by both agents
// and sentences of each agent's own; the shared share follows the agreement, so the textual
// overlap of the two positions rises with it, as it does with real models.
//
// # Conventions the engine relies on
//
// The provider reads the request the way the convergence engine writes it:
//
//   - A request whose Schema is named "convergence_synthesis" gets {"output": "..."}; any
//     other request gets a turn object: proposal, agreement, open_issues, concessions,
//     confidence.
//   - Messages[0] carries the task, up to the first "\n\n[Agent ", "\n\nRound " or
//     "\n\nFinal positions:"; a "[Agent " header marks the other agent's position. The first
//     speaker of round one has none and reports agreement 0.
//   - "Critique round" in the last user message makes an agent that rubber-stamped raise an
//     issue; "could not be parsed" marks the repair attempt after an unparseable reply.
//
// A scenario marker anywhere in Messages[0] overrides the configured scenario, so one
// provider serves every test: "[sim:converge]", "[sim:stalemate]", "[sim:never]",
// "[sim:flat]" (round-one agreement with no issues and no concessions), optionally with
// ",garbage" (the first attempt at each turn does not match the schema) or ",garbage-always"
// (no attempt does), e.g. "[sim:converge,garbage]".
//
// # Cost
//
// Latency is a timer: a waiting call costs a parked goroutine and a timer, no CPU, and it
// returns as soon as ctx is done. Token counts are len(text)/4 for input (system prompt,
// messages and schema) and output, about what real tokenizers give for English.
package simulated

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/convergence-dev/convergence/services/converger/llm"
)

// Scenario names a preset [Curve].
type Scenario string

// The preset scenarios.
const (
	// Converge rises from 50 by 25 a round to 95, with issues resolved one per round: the
	// engine converges in round three.
	Converge Scenario = "converge"
	// Stalemate holds agreement at 45 with two open issues and positions that stop moving
	// after round one: the score stops moving and the engine reports a stalemate.
	Stalemate Scenario = "stalemate"
	// NeverAgree swings agreement between 15 and 35 with three open issues and positions
	// that keep changing: the engine runs out of rounds.
	NeverAgree Scenario = "never"
	// Flat agrees fully from round one with no issues and no concessions, echoing the other
	// position, so the engine must force a critique round.
	Flat Scenario = "flat"
)

// Curve shapes the replying agent's answers round by round.
type Curve struct {
	// Start is the agreement in round one; Step is added per round up to Ceiling.
	Start, Step, Ceiling int
	// Swing is added in even rounds and subtracted in odd ones, to make agreement oscillate.
	Swing int
	// Issues is the number of open issues in round one; IssueDrop are resolved per round.
	Issues, IssueDrop int
	// Frozen keeps each agent's proposal identical from round to round.
	Frozen bool
	// Echo adopts the shared position verbatim with full agreement, no issues and no
	// concessions (rubber-stamping).
	Echo bool
}

// Curve returns the scenario's preset; an unknown scenario gets Converge's.
func (s Scenario) Curve() Curve {
	switch s {
	case Stalemate:
		return Curve{Start: 45, Ceiling: 45, Issues: 2, Frozen: true}
	case NeverAgree:
		return Curve{Start: 25, Ceiling: 25, Swing: 10, Issues: 3}
	case Flat:
		return Curve{Start: 100, Ceiling: 100, Echo: true}
	default:
		return Curve{Start: 50, Step: 25, Ceiling: 95, Issues: 2, IssueDrop: 1}
	}
}

// DefaultModel is the model the simulated provider reports when a request names none.
const DefaultModel = "simulated-1"

// Config configures a [Provider]. The zero value is a zero-latency converging provider.
type Config struct {
	// Name is reported by Provider.Name; default "simulated".
	Name string
	// Model is reported as the answering model when a request names none; default
	// DefaultModel.
	Model string
	// Latency is how long each call waits before answering.
	Latency time.Duration
	// Scenario picks the preset curve; default Converge. A marker in the prompt overrides it.
	Scenario Scenario
	// Curve, when set, replaces the scenario's preset (markers still override it).
	Curve *Curve
	// Sentences is the length of a proposal in sentences; default 6.
	Sentences int
	// Seed varies all generated text; the same seed gives the same replies.
	Seed uint64
}

// Provider is the simulated provider. It is safe for concurrent use and keeps no state.
type Provider struct {
	cfg   Config
	vocab []string
}

// New builds a Provider from cfg.
func New(cfg Config) *Provider {
	if cfg.Name == "" {
		cfg.Name = "simulated"
	}
	if cfg.Model == "" {
		cfg.Model = DefaultModel
	}
	if cfg.Scenario == "" {
		cfg.Scenario = Converge
	}
	if cfg.Sentences <= 0 {
		cfg.Sentences = 6
	}
	return &Provider{cfg: cfg, vocab: strings.Fields(vocabularyText)}
}

// Name returns the configured name.
func (p *Provider) Name() string { return p.cfg.Name }

// Complete waits the configured latency, or until ctx is done, and answers.
func (p *Provider) Complete(ctx context.Context, req llm.Request) (llm.Response, error) {
	if p.cfg.Latency > 0 {
		t := time.NewTimer(p.cfg.Latency)
		select {
		case <-ctx.Done():
			t.Stop()
			return llm.Response{}, fmt.Errorf("%s: %w", p.cfg.Name, context.Cause(ctx))
		case <-t.C:
		}
	} else if err := ctx.Err(); err != nil {
		return llm.Response{}, fmt.Errorf("%s: %w", p.cfg.Name, context.Cause(ctx))
	}
	if len(req.Messages) == 0 {
		return llm.Response{}, &llm.Error{Kind: llm.ErrPermanent, Provider: p.cfg.Name, Err: fmt.Errorf("no messages")}
	}
	model := req.Model
	if model == "" {
		model = p.cfg.Model
	}
	content := p.reply(req)
	resp := llm.Response{
		Content:  content,
		Model:    model,
		Attempts: 1,
		Usage:    llm.Usage{InputTokens: inputTokens(req), OutputTokens: max(1, int64(len(content)/4))},
	}
	return resp, nil
}

func inputTokens(req llm.Request) int64 {
	n := len(req.System)
	for _, m := range req.Messages {
		n += len(m.Content)
	}
	if req.Schema != nil {
		n += len(req.Schema.JSON)
	}
	return max(1, int64(n/4))
}

// situation is what the provider reads from a request.
type situation struct {
	task       string
	curve      Curve
	round      int
	first      bool // first speaker of round one: nothing to agree with yet
	critique   bool
	repair     bool
	garbage    bool
	garbageAll bool
	taskSeed   uint64
	agentSeed  uint64
}

func (p *Provider) read(req llm.Request) situation {
	first := req.Messages[0].Content
	task := first
	for _, marker := range [...]string{"\n\n[Agent ", "\n\nRound ", "\n\nFinal positions:"} {
		task, _, _ = strings.Cut(task, marker)
	}
	s := situation{task: task, round: 1, curve: p.cfg.Scenario.Curve()}
	if p.cfg.Curve != nil {
		s.curve = *p.cfg.Curve
	}
	if i := strings.Index(task, "[sim:"); i >= 0 {
		if end := strings.IndexByte(task[i:], ']'); end > 0 {
			for _, tok := range strings.Split(task[i+5:i+end], ",") {
				switch tok = strings.TrimSpace(tok); tok {
				case "garbage":
					s.garbage = true
				case "garbage-always":
					s.garbageAll = true
				case "":
				default:
					s.curve = Scenario(tok).Curve()
				}
			}
		}
	}
	for _, m := range req.Messages {
		if m.Role == llm.RoleAssistant {
			s.round++
		}
	}
	last := req.Messages[len(req.Messages)-1].Content
	s.first = s.round == 1 && !strings.Contains(first, "[Agent ")
	s.critique = strings.Contains(last, "Critique round")
	s.repair = strings.Contains(last, "could not be parsed")
	s.taskSeed = hash(task) ^ p.cfg.Seed
	// The head of the system prompt names the agent and its role; hashing the rest adds
	// nothing but cost.
	s.agentSeed = hash(req.System[:min(len(req.System), 256)]) ^ s.taskSeed
	return s
}

func (p *Provider) reply(req llm.Request) string {
	s := p.read(req)
	if req.Schema != nil && req.Schema.Name == "convergence_synthesis" {
		return p.synthesis(s)
	}
	if s.garbageAll || (s.garbage && !s.repair) {
		return `{"thoughts": "I think we are close, but let me summarise instead of answering in the requested format."}`
	}
	c := s.curve
	agreement := min(c.Ceiling, c.Start+c.Step*(s.round-1))
	if c.Swing != 0 {
		if s.round%2 == 0 {
			agreement += c.Swing
		} else {
			agreement -= c.Swing
		}
	}
	issues := max(0, c.Issues-c.IssueDrop*(s.round-1))
	concessions := 0
	if s.round > 1 && c.Step > 0 {
		concessions = 1
	}
	shared := (p.cfg.Sentences*agreement + 50) / 100
	if c.Echo {
		shared = p.cfg.Sentences
		if s.critique {
			agreement, issues, concessions = 70, 1, 0
		}
	}
	if s.first {
		agreement = 0
	}
	agreement = max(0, min(100, agreement))
	shared = max(0, min(p.cfg.Sentences, shared))

	var proposal strings.Builder
	for i := range shared {
		p.sentence(&proposal, s.taskSeed, uint64(i))
	}
	ownSeed := s.agentSeed
	if !c.Frozen {
		ownSeed ^= uint64(s.round) * 0x9e3779b97f4a7c15
	}
	for i := shared; i < p.cfg.Sentences; i++ {
		p.sentence(&proposal, ownSeed, uint64(i))
	}

	var b strings.Builder
	b.Grow(proposal.Len() + 256)
	b.WriteString(`{"proposal":`)
	writeString(&b, strings.TrimSpace(proposal.String()))
	fmt.Fprintf(&b, `,"agreement":%d,"open_issues":[`, agreement)
	for i := range issues {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteByte('"')
		b.WriteString("Unresolved: ")
		p.words(&b, s.agentSeed^uint64(i+1)*0x51ed27, 6)
		b.WriteByte('"')
	}
	b.WriteString(`],"concessions":[`)
	for i := range concessions {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`"Accepted the other agent's point on `)
		p.words(&b, s.taskSeed^uint64(s.round+i)*0x2545f491, 4)
		b.WriteByte('"')
	}
	fmt.Fprintf(&b, `],"confidence":%d}`, 50+agreement/2)
	return b.String()
}

func (p *Provider) synthesis(s situation) string {
	var out strings.Builder
	out.WriteString("Final answer. ")
	for i := range p.cfg.Sentences {
		p.sentence(&out, s.taskSeed, uint64(i))
	}
	var b strings.Builder
	b.WriteString(`{"output":`)
	writeString(&b, strings.TrimSpace(out.String()))
	b.WriteByte('}')
	return b.String()
}

// writeString writes s as a JSON string.
func writeString(b *strings.Builder, s string) {
	const hex = "0123456789abcdef"
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"' || c == '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c < 0x20:
			b.WriteString(`\u00`)
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&0xf])
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
}
