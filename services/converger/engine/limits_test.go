package engine_test

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/convergence-dev/convergence/services/converger/engine"
)

func TestLimitsNormalize_Defaults(t *testing.T) {
	t.Parallel()
	tests := []struct {
		typ          engine.TaskType
		wantA, wantB string
	}{
		{"", "Proposer", "Critic"},
		{engine.TypeDesign, "Solution Architect", "Security and Reliability Reviewer"},
		{engine.TypeReview, "Senior Reviewer", "Author's Advocate"},
		{engine.TypeDecide, "Decision Advocate", "Devil's Advocate"},
		{engine.TypePlan, "Delivery Planner", "Risk Analyst"},
		{engine.TypeAnalyze, "Analyst", "Skeptical Reviewer"},
		{engine.TypeGenerate, "Creator", "Editor"},
		{engine.TypeCustom, "Proposer", "Critic"},
	}
	for _, tt := range tests {
		t.Run("type "+string(tt.typ), func(t *testing.T) {
			t.Parallel()
			got, err := engine.DefaultLimits().Normalize(engine.Task{Prompt: " Design it. ", Type: tt.typ})
			require.NoError(t, err)
			require.Equal(t, tt.wantA, got.AgentARole)
			require.Equal(t, tt.wantB, got.AgentBRole)
			require.Equal(t, "Design it.", got.Prompt)
			require.Equal(t, 4, got.MaxRounds)
			require.Equal(t, 5*time.Minute, got.Timeout)
			require.Zero(t, got.TokenBudget)
			require.True(t, got.Type.Valid())
		})
	}
}

func TestLimitsNormalize_KeepsGivenValues(t *testing.T) {
	t.Parallel()
	in := engine.Task{Prompt: "p", Type: engine.TypeReview, AgentARole: "Security Expert", AgentBRole: "UX Designer", MaxRounds: 10, TokenBudget: 5000, Timeout: time.Minute}
	got, err := engine.Limits{}.Normalize(in)
	require.NoError(t, err)
	require.Equal(t, in, got)
}

func TestLimitsNormalize_InvalidTask(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		task      engine.Task
		wantField string
		wantText  string
	}{
		{"empty prompt", engine.Task{Prompt: " \n"}, "prompt", "must not be empty"},
		{"oversize prompt", engine.Task{Prompt: strings.Repeat("x", 32<<10+1)}, "prompt", "at most 32768"},
		{"invalid UTF-8", engine.Task{Prompt: "\xff"}, "prompt", "UTF-8"},
		{"oversize context", engine.Task{Prompt: "p", Context: strings.Repeat("x", 64<<10+1)}, "context", "at most 65536"},
		{"unknown type", engine.Task{Prompt: "p", Type: "brainstorm"}, "type", "use one of design, review"},
		{"max rounds beyond the cap", engine.Task{Prompt: "p", MaxRounds: 11}, "maxRounds", "from 2 to 10"},
		{"a single round", engine.Task{Prompt: "p", MaxRounds: 1}, "maxRounds", "from 2 to 10"},
		{"negative budget", engine.Task{Prompt: "p", TokenBudget: -1}, "tokenBudget", "must not be negative"},
		{"timeout beyond the maximum", engine.Task{Prompt: "p", Timeout: time.Hour}, "timeout", "at most 30m0s"},
		{"oversize role", engine.Task{Prompt: "p", AgentARole: strings.Repeat("r", 201)}, "agentARole", "at most 200"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := engine.DefaultLimits().Normalize(tt.task)
			require.ErrorIs(t, err, engine.ErrInvalidTask)
			var terr *engine.TaskError
			require.ErrorAs(t, err, &terr)
			require.Equal(t, tt.wantField, terr.Field)
			require.Contains(t, terr.Problem, tt.wantText)
		})
	}
}

func TestNew_InvalidConfig(t *testing.T) {
	t.Parallel()
	_, err := engine.New(engine.Config{ConvergeScore: 101}, nil, discard())
	require.ErrorContains(t, err, "converge score 101")
	_, err = engine.New(engine.Config{Limits: engine.Limits{DefaultMaxRounds: 12}}, nil, discard())
	require.ErrorContains(t, err, "default max rounds 12")
}
