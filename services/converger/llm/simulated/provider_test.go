package simulated_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/convergence-dev/convergence/services/converger/llm"
	"github.com/convergence-dev/convergence/services/converger/llm/simulated"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type turn struct {
	Proposal    string   `json:"proposal"`
	Agreement   *int     `json:"agreement"`
	OpenIssues  []string `json:"open_issues"`
	Concessions []string `json:"concessions"`
	Confidence  *int     `json:"confidence"`
}

var schema = &llm.Schema{Name: "convergence_turn", JSON: json.RawMessage(`{"type":"object"}`)}

// request is agent B's request in round `round` of a discussion of task.
func request(task string, round int, last string) llm.Request {
	msgs := []llm.Message{{Role: llm.RoleUser, Content: task + "\n\n[Agent A · Architect · round 1]\nProposal: x"}}
	for r := 1; r < round; r++ {
		msgs = append(msgs, llm.Message{Role: llm.RoleAssistant, Content: `{}`}, llm.Message{Role: llm.RoleUser, Content: "[Agent A · Architect · round 2]"})
	}
	msgs[len(msgs)-1].Content += last
	return llm.Request{System: "You are the reviewer.", Messages: msgs, Schema: schema}
}

func decode(t *testing.T, content string) turn {
	t.Helper()
	var got turn
	require.NoError(t, json.Unmarshal([]byte(content), &got))
	require.NotEmpty(t, got.Proposal)
	require.NotNil(t, got.Agreement)
	require.NotNil(t, got.Confidence)
	require.NotNil(t, got.OpenIssues)
	require.NotNil(t, got.Concessions)
	return got
}

func TestComplete_SameRequest_SameReply(t *testing.T) {
	t.Parallel()
	p := simulated.New(simulated.Config{})
	a, err := p.Complete(t.Context(), request("Task: design a cache", 2, ""))
	require.NoError(t, err)
	b, err := p.Complete(t.Context(), request("Task: design a cache", 2, ""))
	require.NoError(t, err)
	require.Equal(t, a, b)

	other, err := simulated.New(simulated.Config{Seed: 7}).Complete(t.Context(), request("Task: design a cache", 2, ""))
	require.NoError(t, err)
	require.NotEqual(t, a.Content, other.Content, "the seed varies the text")
}

func TestComplete_Scenarios_FollowTheirCurves(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name          string
		marker        string
		wantAgreement []int // rounds 1..4
		wantIssues    []int
	}{
		{"converge rises toward its ceiling", "[sim:converge]", []int{50, 75, 95, 95}, []int{2, 1, 0, 0}},
		{"stalemate stays flat", "[sim:stalemate]", []int{45, 45, 45, 45}, []int{2, 2, 2, 2}},
		{"never agree swings low", "[sim:never]", []int{15, 35, 15, 35}, []int{3, 3, 3, 3}},
		{"flat agrees at once without issues", "[sim:flat]", []int{100, 100, 100, 100}, []int{0, 0, 0, 0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := simulated.New(simulated.Config{})
			for round := 1; round <= 4; round++ {
				resp, err := p.Complete(t.Context(), request("Task: plan a launch "+tt.marker, round, ""))
				require.NoError(t, err)
				got := decode(t, resp.Content)
				require.Equal(t, tt.wantAgreement[round-1], *got.Agreement, "round %d", round)
				require.Len(t, got.OpenIssues, tt.wantIssues[round-1], "round %d", round)
			}
		})
	}
}

func TestComplete_FirstSpeaker_HasNothingToAgreeWith(t *testing.T) {
	t.Parallel()
	resp, err := simulated.New(simulated.Config{}).Complete(t.Context(), llm.Request{
		System: "You are the architect.", Messages: []llm.Message{{Role: llm.RoleUser, Content: "Task: design"}}, Schema: schema,
	})
	require.NoError(t, err)
	require.Zero(t, *decode(t, resp.Content).Agreement)
}

func TestComplete_FlatUnderCritique_RaisesAnIssue(t *testing.T) {
	t.Parallel()
	resp, err := simulated.New(simulated.Config{Scenario: simulated.Flat}).Complete(t.Context(), request("Task: x", 2, "\n\nCritique round: look harder."))
	require.NoError(t, err)
	got := decode(t, resp.Content)
	require.Len(t, got.OpenIssues, 1)
	require.Less(t, *got.Agreement, 80)
}

func TestComplete_Garbage_FirstAttemptOnly(t *testing.T) {
	t.Parallel()
	p := simulated.New(simulated.Config{})
	resp, err := p.Complete(t.Context(), request("Task: x [sim:converge,garbage]", 1, ""))
	require.NoError(t, err, "the garbage is valid JSON that misses the schema, as models produce")
	require.NotContains(t, resp.Content, "proposal")

	resp, err = p.Complete(t.Context(), request("Task: x [sim:converge,garbage]", 1, "\n\nYour previous reply could not be parsed: no proposal."))
	require.NoError(t, err)
	decode(t, resp.Content)
}

func TestComplete_Synthesis_ReturnsOutput(t *testing.T) {
	t.Parallel()
	req := request("Task: x", 1, "")
	req.Schema = &llm.Schema{Name: "convergence_synthesis", JSON: json.RawMessage(`{"type":"object"}`)}
	resp, err := simulated.New(simulated.Config{}).Complete(t.Context(), req)
	require.NoError(t, err)
	var got struct{ Output string }
	require.NoError(t, json.Unmarshal([]byte(resp.Content), &got))
	require.NotEmpty(t, got.Output)
}

func TestComplete_TokenCounts_AQuarterOfTheText(t *testing.T) {
	t.Parallel()
	req := request("Task: design a cache for tenant data", 3, "")
	resp, err := simulated.New(simulated.Config{}).Complete(t.Context(), req)
	require.NoError(t, err)
	chars := len(req.System) + len(req.Schema.JSON)
	for _, m := range req.Messages {
		chars += len(m.Content)
	}
	require.Equal(t, int64(chars/4), resp.Usage.InputTokens)
	require.Equal(t, int64(len(resp.Content)/4), resp.Usage.OutputTokens)
	require.Zero(t, resp.Usage.CachedTokens)
}

func TestComplete_Latency_WaitsAndStopsOnCancel(t *testing.T) {
	t.Parallel()
	start := time.Now()
	_, err := simulated.New(simulated.Config{Latency: 30 * time.Millisecond}).Complete(t.Context(), request("Task: x", 1, ""))
	require.NoError(t, err)
	require.GreaterOrEqual(t, time.Since(start), 30*time.Millisecond)

	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	start = time.Now()
	_, err = simulated.New(simulated.Config{Latency: time.Hour}).Complete(ctx, request("Task: x", 1, ""))
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Less(t, time.Since(start), 5*time.Second)
}
