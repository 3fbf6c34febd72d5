package engine

import (
	"strconv"
	"strings"
)

// The structured-output schemas. Both follow the subset every provider's strict mode
// accepts: all properties required, no additional properties, no numeric bounds (the parser
// clamps ratings instead).
const (
	turnSchemaName = "convergence_turn"
	turnSchemaJSON = `{"type":"object","properties":{` +
		`"proposal":{"type":"string","description":"Your complete current answer to the task, self-contained."},` +
		`"agreement":{"type":"integer","description":"0-100: how far you agree with the other agent's latest proposal; 0 if there is none yet."},` +
		`"open_issues":{"type":"array","items":{"type":"string"},"description":"Points you still dispute or that remain unresolved."},` +
		`"concessions":{"type":"array","items":{"type":"string"},"description":"Points you accepted from the other agent in this turn."},` +
		`"confidence":{"type":"integer","description":"0-100: how confident you are that your proposal is right."}` +
		`},"required":["proposal","agreement","open_issues","concessions","confidence"],"additionalProperties":false}`

	synthesisSchemaName = "convergence_synthesis"
	synthesisSchemaJSON = `{"type":"object","properties":{` +
		`"output":{"type":"string","description":"The complete final answer to the task."}` +
		`},"required":["output"],"additionalProperties":false}`
)

// The notes appended to an agent's last message. The simulated provider recognises the
// phrases "Critique round" and "could not be parsed"; keep them when rewording.
const (
	critiqueNote = "\n\nCritique round: in round 1 the other agent agreed without raising a single issue " +
		"or conceding anything. Before agreeing again, examine the other agent's proposal critically: " +
		"look for wrong assumptions, risks, missing cases and better alternatives, list every real one " +
		"in open_issues, and rate your agreement only after that."
	repairNote = "\n\nYour previous reply could not be parsed: "
)

func agentLabel(a Agent) string {
	if a == AgentA {
		return "Agent A"
	}
	return "Agent B"
}

func roles(t Task, a Agent) (own, other string, otherAgent Agent) {
	if a == AgentA {
		return t.AgentARole, t.AgentBRole, AgentB
	}
	return t.AgentBRole, t.AgentARole, AgentA
}

// systemPrompt is the standing instruction of agent a.
func systemPrompt(t Task, a Agent) string {
	own, other, otherAgent := roles(t, a)
	var b strings.Builder
	b.Grow(1200)
	b.WriteString("You are ")
	b.WriteString(own)
	b.WriteString(". You are ")
	b.WriteString(agentLabel(a))
	b.WriteString(" in a structured discussion with ")
	b.WriteString(agentLabel(otherAgent))
	b.WriteString(", who is ")
	b.WriteString(other)
	b.WriteString(". Together you must converge on the best possible answer to the task you are given. It is a ")
	b.WriteString(string(t.Type))
	b.WriteString(" task: ")
	b.WriteString(guidance(t.Type))
	b.WriteString(`

In every turn:
- Read the other agent's latest position critically, from your role's point of view. Accept what is right, challenge what is wrong or missing, and revise your own proposal.
- "proposal" is your complete current answer, self-contained, not a list of changes.
- "agreement" (0-100) is how far you agree with the other agent's latest proposal as written; 0 when there is none yet. Do not agree just to end the discussion: rate high only what you would sign as your own.
- "open_issues" lists every point you still dispute or that is unresolved; leave it empty only when none remain.
- "concessions" lists the points you accepted from the other agent in this turn.
- "confidence" (0-100) is how confident you are that your proposal is right.
Reply with the JSON object only.`)
	return b.String()
}

// taskMessage is the task as both agents first see it.
func taskMessage(t Task) string {
	var b strings.Builder
	b.Grow(len(t.Prompt) + len(t.Context) + 64)
	b.WriteString("Task (")
	b.WriteString(string(t.Type))
	b.WriteString("):\n")
	b.WriteString(t.Prompt)
	if t.Context != "" {
		b.WriteString("\n\nContext:\n")
		b.WriteString(t.Context)
	}
	return b.String()
}

// renderPosition shows a turn to the other agent (and to the synthesis).
func renderPosition(t Turn) string {
	var b strings.Builder
	b.Grow(len(t.Reply.Proposal) + 256)
	b.WriteString("[")
	b.WriteString(agentLabel(t.Agent))
	b.WriteString(" · ")
	b.WriteString(t.Role)
	b.WriteString(" · round ")
	b.WriteString(strconv.Itoa(t.Round))
	b.WriteString("]\n")
	if !t.Valid {
		b.WriteString("(This reply could not be read; the agent's previous position stands.)")
		return b.String()
	}
	b.WriteString("Agreement with the other proposal: ")
	b.WriteString(strconv.Itoa(t.Reply.Agreement))
	b.WriteString("/100. Confidence: ")
	b.WriteString(strconv.Itoa(t.Reply.Confidence))
	b.WriteString("/100.\nProposal:\n")
	b.WriteString(t.Reply.Proposal)
	writeList(&b, "\nOpen issues:", t.Reply.OpenIssues)
	writeList(&b, "\nConcessions:", t.Reply.Concessions)
	return b.String()
}

func writeList(b *strings.Builder, title string, items []string) {
	b.WriteString(title)
	if len(items) == 0 {
		b.WriteString(" none")
		return
	}
	for _, it := range items {
		b.WriteString("\n- ")
		b.WriteString(it)
	}
}

// roundNote tells an agent where the discussion stands.
func roundNote(t Task, round int, a Agent) string {
	s := "\n\nRound " + strconv.Itoa(round) + " of at most " + strconv.Itoa(t.MaxRounds) + ". "
	if round == 1 && a == AgentA {
		return s + "Make the first proposal."
	}
	return s + "Answer the position above with your revised proposal."
}

// synthesisSystem is the instruction of the synthesis call.
func synthesisSystem(t Task) string {
	return "You are a neutral editor. " + agentLabel(AgentA) + " (" + t.AgentARole + ") and " +
		agentLabel(AgentB) + " (" + t.AgentBRole + ") discussed the task below and converged. " +
		"Write the final answer to the task from their two final positions: keep everything both " +
		"accept, settle differences of wording, keep the minor open points as caveats, and add no " +
		"new claims. It is a " + string(t.Type) + " task: " + guidance(t.Type) +
		"\nReply with the JSON object only; \"output\" is the complete final answer."
}

// synthesisMessage gives the synthesis the task and both final positions.
func synthesisMessage(t Task, a, b Turn) string {
	return taskMessage(t) + "\n\nFinal positions:\n\n" + renderPosition(a) + "\n\n" + renderPosition(b)
}
