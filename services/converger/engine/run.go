package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/convergence-dev/convergence/services/converger/llm"
)

// run is the state of one Engine.Run. Turns are kept in order A1, B1, A2, B2, ...: turn i
// belongs to round i/2+1 and is A's when i is even.
type run struct {
	e       *Engine
	task    Task
	opts    Options
	system  [2]string // per agent: A, B
	taskMsg string

	turns     []Turn
	rendered  []string   // renderPosition of each turn, as the other agent sees it
	proposals []string   // the standing proposal after each turn (carried over when invalid)
	positions [][]uint64 // shingles of proposals[i]

	rounds    []Round
	synthesis *Turn
	usage     Usage
	model     string
}

func newRun(e *Engine, task Task, opts Options) *run {
	capacity := 2 * task.MaxRounds
	return &run{
		e:         e,
		task:      task,
		opts:      opts,
		system:    [2]string{systemPrompt(task, AgentA), systemPrompt(task, AgentB)},
		taskMsg:   taskMessage(task),
		turns:     make([]Turn, 0, capacity),
		rendered:  make([]string, 0, capacity),
		proposals: make([]string, 0, capacity),
		positions: make([][]uint64, 0, capacity),
		rounds:    make([]Round, 0, task.MaxRounds),
	}
}

func agentIndex(a Agent) int {
	if a == AgentA {
		return 0
	}
	return 1
}

func (r *run) execute(ctx context.Context) (StopReason, error) {
	reason, err := r.replay(r.opts.Resume)
	if err != nil {
		return "", err
	}
	if reason == "" {
		if reason, err = r.loop(ctx); err != nil {
			return "", err
		}
	}
	if reason == StopConverged && r.synthesis == nil {
		return r.synthesize(ctx)
	}
	return reason, nil
}

// replay rebuilds the rounds from persisted turns without calling the provider.
func (r *run) replay(turns []Turn) (StopReason, error) {
	var reason StopReason
	for i, t := range turns {
		if t.Agent == AgentSynthesis {
			if i != len(turns)-1 || reason != StopConverged {
				return "", fmt.Errorf("%w: synthesis turn %d does not follow a converged round", ErrInvalidResume, i)
			}
			r.usage.charge(AgentSynthesis, t.Usage)
			r.synthesis = &t
			r.model = t.Model
			continue
		}
		wantAgent, wantRound := AgentA, i/2+1
		if i%2 == 1 {
			wantAgent = AgentB
		}
		if t.Agent != wantAgent || t.Round != wantRound {
			return "", fmt.Errorf("%w: turn %d is agent %q round %d, want agent %q round %d", ErrInvalidResume, i, t.Agent, t.Round, wantAgent, wantRound)
		}
		if reason != "" {
			return "", fmt.Errorf("%w: turn %d follows the end of the run (%s)", ErrInvalidResume, i, reason)
		}
		r.usage.charge(t.Agent, t.Usage)
		r.model = t.Model
		r.add(t)
		if t.Agent == AgentB {
			reason = r.stop(r.closeRound())
		}
	}
	return reason, nil
}

// loop takes turns until a stop rule fires.
func (r *run) loop(ctx context.Context) (StopReason, error) {
	for {
		n := len(r.rounds) + 1
		for _, agent := range [2]Agent{AgentA, AgentB} {
			if len(r.turns) > 2*(n-1)+agentIndex(agent) {
				continue // Resumed.
			}
			t, reason, err := r.takeTurn(ctx, n, agent)
			if err != nil || reason != "" {
				return reason, err
			}
			r.add(t)
			if r.opts.OnTurn != nil {
				if err := r.opts.OnTurn(context.WithoutCancel(ctx), t); err != nil {
					return "", fmt.Errorf("on turn: round %d agent %s: %w", n, agent, err)
				}
			}
		}
		rd := r.closeRound()
		if r.opts.OnRound != nil {
			if err := r.opts.OnRound(context.WithoutCancel(ctx), rd); err != nil {
				return "", fmt.Errorf("on round %d: %w", n, err)
			}
		}
		reason := r.stop(rd)
		if r.e.log.Enabled(ctx, slog.LevelDebug) {
			r.e.log.LogAttrs(ctx, slog.LevelDebug, "round scored", slog.String("task", r.task.ID),
				slog.Int("round", n), slog.Int("score", rd.Score.Value), slog.String("stop", string(reason)))
		}
		if reason != "" {
			return reason, nil
		}
	}
}

// takeTurn asks agent for its reply in round n, once more when the reply does not parse. A
// non-empty StopReason means the turn could not be completed (budget, timeout, cancel); the
// usage of any attempt made is charged all the same.
func (r *run) takeTurn(ctx context.Context, n int, agent Agent) (Turn, StopReason, error) {
	own, _, _ := roles(r.task, agent)
	t := Turn{Agent: agent, Round: n, Role: own}
	start := time.Now()
	repair := ""
	for attempt := 1; attempt <= 2; attempt++ {
		if reason := ctxReason(ctx); reason != "" {
			return t, reason, nil
		}
		req := r.turnRequest(n, agent, repair)
		if r.overBudget(req) {
			return t, StopBudgetExhausted, nil
		}
		t.Attempts = attempt
		resp, err := r.e.provider.Complete(ctx, req)
		if err != nil {
			if reason := ctxReason(ctx); reason != "" {
				return t, reason, nil
			}
			var perr *llm.Error
			if !errors.As(err, &perr) || !errors.Is(perr.Kind, llm.ErrBadResponse) {
				return t, "", fmt.Errorf("round %d agent %s: %w", n, agent, err)
			}
			r.charge(&t, perr.Usage)
			t.Raw = ""
			repair = "the reply was not the requested JSON object"
			continue
		}
		r.charge(&t, resp.Usage)
		r.model, t.Model, t.Raw = resp.Model, resp.Model, resp.Content
		reply, perr := parseReply(resp.Content)
		if perr == nil {
			t.Valid, t.Reply = true, reply
			break
		}
		repair = perr.Error()
	}
	t.Duration = time.Since(start)
	return t, "", nil
}

func (r *run) charge(t *Turn, u llm.Usage) {
	t.Usage = t.Usage.Add(u)
	r.usage.charge(t.Agent, u)
}

// turnRequest builds agent's request for round n. Agent A sees the task, its own earlier
// replies as assistant messages and B's positions as user messages; B sees the same from its
// side, with A's first proposal appended to the task. Both conversations alternate roles and
// end with a user message, as every provider requires.
func (r *run) turnRequest(n int, agent Agent, repair string) llm.Request {
	idx := 2*(n-1) + agentIndex(agent)
	msgs := make([]llm.Message, 0, idx+1)
	first := 0
	if agent == AgentA {
		msgs = append(msgs, llm.Message{Role: llm.RoleUser, Content: r.taskMsg})
	} else {
		msgs = append(msgs, llm.Message{Role: llm.RoleUser, Content: r.taskMsg + "\n\n" + r.rendered[0]})
		first = 1
	}
	for j := first; j < idx; j++ {
		if j%2 == agentIndex(agent) {
			msgs = append(msgs, llm.Message{Role: llm.RoleAssistant, Content: ownReply(r.turns[j])})
		} else {
			msgs = append(msgs, llm.Message{Role: llm.RoleUser, Content: r.rendered[j]})
		}
	}
	last := &msgs[len(msgs)-1]
	note := roundNote(r.task, n, agent)
	if r.critique(n) {
		note += critiqueNote
	}
	if repair != "" {
		note += repairNote + repair + ". Reply again with the JSON object only, every field filled in."
	}
	last.Content += note
	return llm.Request{
		Model:     r.task.Model,
		System:    r.system[agentIndex(agent)],
		Messages:  msgs,
		Schema:    r.e.turn,
		MaxTokens: r.e.cfg.TurnMaxTokens,
	}
}

// ownReply is how an agent's earlier turn appears in its own conversation.
func ownReply(t Turn) string {
	if t.Valid && t.Raw != "" {
		return t.Raw
	}
	return "(My reply in round " + strconv.Itoa(t.Round) + " could not be read.)"
}

// overBudget reports whether making req could take the task past its token budget: the
// tokens spent so far, plus req's estimated input, plus its whole output cap.
func (r *run) overBudget(req llm.Request) bool {
	if r.task.TokenBudget <= 0 {
		return false
	}
	return r.usage.Total.Total()+estimateInputTokens(req)+req.MaxTokens > r.task.TokenBudget
}

// estimateInputTokens projects a request's input tokens at four characters a token, plus a
// few tokens of framing per message, which is what tokenizers give for English text.
func estimateInputTokens(req llm.Request) int64 {
	n := len(req.System)
	for _, m := range req.Messages {
		n += len(m.Content) + 16
	}
	if req.Schema != nil {
		n += len(req.Schema.JSON)
	}
	return int64(n/4) + 8
}

// add appends a completed turn and what the score needs from it.
func (r *run) add(t Turn) {
	i := len(r.turns)
	r.turns = append(r.turns, t)
	r.rendered = append(r.rendered, renderPosition(t))
	switch {
	case t.Valid:
		r.proposals = append(r.proposals, t.Reply.Proposal)
		r.positions = append(r.positions, shingles(t.Reply.Proposal))
	case i >= 2:
		r.proposals = append(r.proposals, r.proposals[i-2])
		r.positions = append(r.positions, r.positions[i-2])
	default:
		r.proposals = append(r.proposals, "")
		r.positions = append(r.positions, nil)
	}
}

// critique reports whether round n is a critique round: round two after B agreed in round
// one without raising an issue or conceding anything.
func (r *run) critique(n int) bool {
	if n != 2 || len(r.turns) < 2 {
		return false
	}
	b := r.turns[1]
	return b.Valid && b.Reply.Agreement >= r.e.cfg.ConvergeAgreement &&
		len(b.Reply.OpenIssues) == 0 && len(b.Reply.Concessions) == 0
}

// closeRound scores the round whose two turns were just added.
func (r *run) closeRound() Round {
	n := len(r.rounds) + 1
	ia, ib := 2*(n-1), 2*(n-1)+1
	a, b := r.turns[ia], r.turns[ib]
	in := scoreInput{
		minAgreement: min(a.agreement(), b.agreement()),
		openIssues:   len(a.Reply.OpenIssues) + len(b.Reply.OpenIssues),
		movement:     max(r.movement(ia), r.movement(ib)),
	}
	for _, t := range [2]Turn{a, b} {
		if !t.Valid {
			in.openIssues++
		}
	}
	if r.proposals[ia] != "" && r.proposals[ib] != "" {
		in.overlap = jaccard(r.positions[ia], r.positions[ib])
	}
	rd := Round{Number: n, Critique: r.critique(n), A: a, B: b, Score: computeScore(in)}
	r.rounds = append(r.rounds, rd)
	return rd
}

// movement is how far turn i moved its agent's position: 1 - similarity to the agent's
// previous position, and 1 in round one or when the reply did not parse.
func (r *run) movement(i int) float64 {
	if i < 2 || !r.turns[i].Valid || r.proposals[i-2] == "" {
		return 1
	}
	return 1 - jaccard(r.positions[i-2], r.positions[i])
}

// stop applies the stop rules to the round just scored.
func (r *run) stop(rd Round) StopReason {
	cfg := r.e.cfg
	switch {
	case rd.Number >= MinRounds && !rd.Critique && rd.A.Valid && rd.B.Valid &&
		rd.Score.Value >= cfg.ConvergeScore &&
		min(rd.A.Reply.Agreement, rd.B.Reply.Agreement) >= cfg.ConvergeAgreement:
		return StopConverged
	case rd.Number >= 3 && abs(rd.Score.Value-r.rounds[rd.Number-2].Score.Value) < cfg.StalemateDelta:
		return StopStalemate
	case rd.Number >= r.task.MaxRounds:
		return StopMaxRounds
	}
	return ""
}

// synthesize writes the final output of a converged run. When the synthesis cannot be made
// (budget, timeout, two unparseable replies) the run still converged and the output falls back
// to B's final proposal; a cancellation ends the run as cancelled.
func (r *run) synthesize(ctx context.Context) (StopReason, error) {
	last := r.rounds[len(r.rounds)-1]
	t := Turn{Agent: AgentSynthesis, Round: last.Number, Role: "Synthesis"}
	start := time.Now()
	msg := synthesisMessage(r.task, last.A, last.B)
	req := llm.Request{
		Model:     r.task.Model,
		System:    synthesisSystem(r.task),
		Messages:  []llm.Message{{Role: llm.RoleUser, Content: msg}},
		Schema:    r.e.synthesis,
		MaxTokens: r.e.cfg.SynthesisMaxTokens,
	}
	for attempt := 1; attempt <= 2; attempt++ {
		switch ctxReason(ctx) {
		case StopCancelled:
			return StopCancelled, nil
		case StopTimeout:
			return StopConverged, nil
		}
		if r.overBudget(req) {
			return StopConverged, nil
		}
		t.Attempts = attempt
		resp, err := r.e.provider.Complete(ctx, req)
		if err != nil {
			switch ctxReason(ctx) {
			case StopCancelled:
				return StopCancelled, nil
			case StopTimeout:
				return StopConverged, nil
			}
			var perr *llm.Error
			if !errors.As(err, &perr) || !errors.Is(perr.Kind, llm.ErrBadResponse) {
				return "", fmt.Errorf("synthesis: %w", err)
			}
			r.charge(&t, perr.Usage)
			t.Raw = ""
			req.Messages[0].Content = msg + repairNote + "the reply was not the requested JSON object. Reply again with the JSON object only."
			continue
		}
		r.charge(&t, resp.Usage)
		r.model, t.Model, t.Raw = resp.Model, resp.Model, resp.Content
		out, perr := parseSynthesis(resp.Content)
		if perr == nil {
			t.Valid, t.Output = true, out
			break
		}
		req.Messages[0].Content = msg + repairNote + perr.Error() + ". Reply again with the JSON object only."
	}
	t.Duration = time.Since(start)
	r.synthesis = &t
	if r.opts.OnTurn != nil {
		if err := r.opts.OnTurn(context.WithoutCancel(ctx), t); err != nil {
			return "", fmt.Errorf("on turn: synthesis: %w", err)
		}
	}
	return StopConverged, nil
}

// ctxReason maps a done context to its stop reason: timeout when the task's own timeout or
// the caller's deadline passed, cancelled otherwise.
func ctxReason(ctx context.Context) StopReason {
	if ctx.Err() == nil {
		return ""
	}
	if errors.Is(context.Cause(ctx), errTaskTimeout) || errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return StopTimeout
	}
	return StopCancelled
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}

// result assembles the Result for the stop reason (empty after an error).
func (r *run) result(reason StopReason) Result {
	res := Result{
		Status:     StatusNotConverged,
		StopReason: reason,
		Score:      emptyScore(),
		Rounds:     r.rounds,
		Synthesis:  r.synthesis,
		Usage:      r.usage,
		Provider:   r.e.provider.Name(),
		Model:      r.model,
		Disputed:   r.disputed(),
	}
	if len(r.rounds) > 0 {
		res.Score = r.rounds[len(r.rounds)-1].Score
	}
	switch {
	case reason == StopConverged:
		res.Status = StatusConverged
		if r.synthesis != nil && r.synthesis.Valid {
			res.Output, res.Synthesized = r.synthesis.Output, true
		} else {
			res.Output = r.finalProposal()
		}
	case reason != "":
		res.Output = r.summary(reason, res.Disputed)
	}
	return res
}

// finalProposal is the output of a converged run without a synthesis: B's final proposal,
// the last revision, or A's when B's did not parse.
func (r *run) finalProposal() string {
	last := r.rounds[len(r.rounds)-1]
	if last.B.Valid {
		return last.B.Reply.Proposal
	}
	return last.A.Reply.Proposal
}

// disputed lists the open issues of the last round, both agents', without duplicates.
func (r *run) disputed() []string {
	out := []string{}
	if len(r.rounds) == 0 {
		return out
	}
	last := r.rounds[len(r.rounds)-1]
	seen := make(map[string]bool)
	for _, t := range [2]Turn{last.A, last.B} {
		for _, issue := range t.Reply.OpenIssues {
			if k := strings.ToLower(issue); !seen[k] {
				seen[k] = true
				out = append(out, issue)
			}
		}
	}
	return out
}

// summary is the output of a run that did not converge.
func (r *run) summary(reason StopReason, disputed []string) string {
	var b strings.Builder
	b.WriteString("Not converged: ")
	b.WriteString(reason.describe())
	if len(r.rounds) == 0 {
		b.WriteString(" before the first round completed.")
		return b.String()
	}
	last := r.rounds[len(r.rounds)-1]
	fmt.Fprintf(&b, " after %d round(s); convergence score %d/100, lowest agreement %d/100.",
		len(r.rounds), last.Score.Value, min(last.A.agreement(), last.B.agreement()))
	for _, agent := range [2]Agent{AgentA, AgentB} {
		i := 2*(len(r.rounds)-1) + agentIndex(agent)
		b.WriteString("\n\n")
		b.WriteString(agentLabel(agent))
		b.WriteString(" (")
		b.WriteString(r.turns[i].Role)
		b.WriteString(") proposes:\n")
		if r.proposals[i] == "" {
			b.WriteString("(no readable proposal)")
		} else {
			b.WriteString(r.proposals[i])
		}
	}
	b.WriteString("\n\nStill in dispute:")
	if len(disputed) == 0 {
		b.WriteString("\n- The agents listed no specific issue, but their positions still differ.")
	}
	for _, d := range disputed {
		b.WriteString("\n- ")
		b.WriteString(d)
	}
	return b.String()
}
