package api

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestGlobMatch(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		pattern, s string
		want       bool
	}{
		{"*", "anything", true},
		{"*", "", true},
		{"gpt-4o", "gpt-4o", true},
		{"gpt-4o", "gpt-4o-mini", false},
		{"gpt-4o*", "gpt-4o-mini", true},
		{"gpt-4o*", "gpt-4", false},
		{"*-mini", "gpt-4o-mini", true},
		{"*-mini", "gpt-4o-mini-2024", false},
		{"meta-llama/*-instruct", "meta-llama/llama-3-8b-instruct", true},
		{"a*b*c", "abc", true},
		{"a*b*c", "a-x-b-y-c", true},
		{"a*b*c", "acb", false},
		{"a**", "a", true},
	} {
		require.Equal(t, tt.want, globMatch(tt.pattern, tt.s), "%q ~ %q", tt.pattern, tt.s)
	}
	l := planLimits{Models: []string{"Claude-Haiku-4*"}}
	require.True(t, l.allows("claude-haiku-4-5"), "model names compare case-insensitively")
	require.True(t, l.allows(""), "no model: the provider's default")
	require.False(t, l.allows("claude-opus-4"))
}

func TestParsePlans_BuiltIn_AndEveryBadEntryNamed(t *testing.T) {
	t.Parallel()
	platform := planLimits{MaxTenants: maxMaxTenants, RequestsPerMinute: 60, Burst: 30, TasksInFlight: 100, MaxRounds: 10, Models: []string{"*"}}
	table, err := parsePlans(nil, platform, 10)
	require.NoError(t, err)
	require.Equal(t, []string{"enterprise", "free", "pro", "unlimited"}, table.names)
	unlimited := platform
	unlimited.Plan = "unlimited"
	require.Equal(t, unlimited, table.byName["unlimited"], "sets nothing of its own")
	require.Equal(t, 3, table.byName["free"].MaxTenants)

	for file, want := range map[string]string{
		`{"plans": [{"name": "Gold"}]}`:                                `plans[0] (Gold): "name" must be lower-case letters`,
		`{"plans": [{"name": "a", "maxTenants": -1}]}`:                 `"maxTenants" must be 0 to 10000`,
		`{"plans": [{"name": "a", "requestsPerMinute": 0}]}`:           `"requestsPerMinute" must be above 0`,
		`{"plans": [{"name": "a", "tasksInFlight": 0}]}`:               `"tasksInFlight" must be 1 to`,
		`{"plans": [{"name": "a", "maxRounds": 11}]}`:                  `"maxRounds" must be 2 to 10`,
		`{"plans": [{"name": "a", "models": []}]}`:                     `"models" must list 1 to 100`,
		`{"plans": [{"name": "a", "models": ["gpt 4"]}]}`:              `"models": "gpt 4" is not a model name`,
		`{"plans": [{"name": "a", "monthlySpendLimit": "-5"}]}`:        `is not a non-negative decimal number`,
		`{"plans": [{"name": "a", "monthlySpendLimit": "0.0000001"}]}`: `more than 6 decimal places`,
		`{"plans": [{"name": "a", "maxTenant": 3}]}`:                   `unknown field "maxTenant"`,
		`{"plans": [{"name": "a"}, {"name": "a"}]}`:                    `plans[1] (a): listed twice`,
		`{"plans": []} {}`: `data after the plans`,
	} {
		_, err := parsePlans([]byte(file), platform, 10)
		require.ErrorContains(t, err, want, file)
	}
}
