package pricing_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/convergence-dev/convergence/services/metering/pricing"
)

func TestRate_TokenCost(t *testing.T) {
	t.Parallel()
	r := pricing.Rate{Input: 3_000_000, Output: 15_000_000, Cached: 300_000} // $3, $15, $0.30 per million
	tests := []struct {
		name                  string
		input, output, cached int64
		want                  pricing.Micros
	}{
		{"nothing", 0, 0, 0, 0},
		{"one million input", 1_000_000, 0, 0, 3_000_000},
		{"cached input at the cached rate", 1_000_000, 0, 1_000_000, 300_000},
		{"mixed", 1200, 340, 200, 3000 + 5100 + 60},
		{"one token of input", 1, 0, 0, 3},
		{"one cached token is 0.3 micro, rounds to 0", 1, 0, 1, 0},
		{"two cached tokens are 0.6 micro, round to 1", 2, 0, 2, 1},
		{"a correction is negative", -1_000_000, 0, 0, -3_000_000},
		{"huge counts do not overflow", 4_000_000_000_000, 0, 0, 12_000_000_000_000},
	}
	for _, tt := range tests {
		require.Equal(t, tt.want, r.TokenCost(tt.input, tt.output, tt.cached), tt.name)
	}
	// Half a micro rounds away from zero, as PostgreSQL's round(numeric) does.
	half := pricing.Rate{Input: 500_000}
	require.Equal(t, pricing.Micros(1), half.TokenCost(1, 0, 0))
	require.Equal(t, pricing.Micros(-1), half.TokenCost(-1, 0, 0))
	require.Equal(t, pricing.Micros(1_500_000_001), half.TokenCost(3_000_000_001, 0, 0), "the same beyond int64 products")
	require.Equal(t, pricing.Micros(-1_500_000_001), half.TokenCost(-3_000_000_001, 0, 0))
}

func TestContainerCost(t *testing.T) {
	t.Parallel()
	require.Equal(t, pricing.Micros(10), pricing.ContainerCost(10, 1000))
	require.Equal(t, pricing.Micros(36_000), pricing.ContainerCost(10, 3_600_000))
	require.Equal(t, pricing.Micros(5), pricing.ContainerCost(10, 450), "4.5 rounds up")
	require.Equal(t, pricing.Micros(-5), pricing.ContainerCost(10, -450))
}

const sample = `{
  "version": "test-1", "currency": "EUR", "containerSecond": "0.00001",
  "models": [
    {"provider": "anthropic", "model": "claude-sonnet-4*", "inputPerMillion": "3", "outputPerMillion": "15", "cachedPerMillion": "0.3"},
    {"provider": "anthropic", "model": "claude-sonnet-4-special", "inputPerMillion": "1", "outputPerMillion": "1"},
    {"provider": "anthropic", "model": "claude*", "inputPerMillion": "9", "outputPerMillion": "9"},
    {"provider": "*", "model": "shared-model", "inputPerMillion": 2, "outputPerMillion": 4},
    {"provider": "*", "model": "*", "inputPerMillion": "100", "outputPerMillion": "100", "note": "catch-all"},
    {"provider": "simulated", "model": "*", "inputPerMillion": "0", "outputPerMillion": "0"}
  ]}`

func TestLookup_MostSpecificWins(t *testing.T) {
	t.Parallel()
	tab, err := pricing.Parse([]byte(sample))
	require.NoError(t, err)
	tests := []struct {
		provider, model string
		input           pricing.Micros
	}{
		{"anthropic", "claude-sonnet-4-special", 1_000_000},  // exact beats prefixes
		{"anthropic", "claude-sonnet-4-20250514", 3_000_000}, // longest prefix
		{"Anthropic", "CLAUDE-SONNET-4-20250514", 3_000_000}, // case-insensitive
		{"anthropic", "claude-3-haiku", 9_000_000},           // shorter prefix
		{"openai", "shared-model", 2_000_000},                // any provider, exact model
		{"openai", "gpt-unknown", 100_000_000},               // catch-all
		{"simulated", "simulated-1", 0},                      // explicitly free
	}
	for _, tt := range tests {
		r, ok := tab.Lookup(tt.provider, tt.model)
		require.True(t, ok, "%s/%s", tt.provider, tt.model)
		require.Equal(t, tt.input, r.Input, "%s/%s", tt.provider, tt.model)
	}
	r, _ := tab.Lookup("anthropic", "claude-3-haiku")
	require.Equal(t, r.Input, r.Cached, "cached input defaults to the input price")
	require.Equal(t, pricing.Micros(10), tab.ContainerSecond())
	require.Equal(t, "EUR", tab.Currency())
	require.Equal(t, "test-1", tab.Label())
}

func TestLookup_UnknownModel_Unpriced(t *testing.T) {
	t.Parallel()
	tab := pricing.Default()
	for _, m := range [][2]string{{"ollama", "llama3"}, {"anthropic", "gpt-4o"}, {"", ""}, {"openai", ""}} {
		_, ok := tab.Lookup(m[0], m[1])
		require.False(t, ok, "%s/%s must be unpriced, not free", m[0], m[1])
	}
	r, ok := tab.Lookup("openai", "gpt-4o-mini-2024-07-18")
	require.True(t, ok)
	require.Equal(t, pricing.Micros(150_000), r.Input, "gpt-4o-mini* is more specific than gpt-4o*")
	_, ok = tab.Lookup("simulated", "simulated-1")
	require.True(t, ok, "the offline provider is priced, at zero")
}

func TestParse_Errors_SayWhatIsWrong(t *testing.T) {
	t.Parallel()
	tests := map[string]struct{ doc, want string }{
		"no version":       {`{"currency":"USD","containerSecond":"0","models":[]}`, `"version" is required`},
		"bad currency":     {`{"version":"v","currency":"usd","containerSecond":"0","models":[]}`, "ISO 4217"},
		"no container":     {`{"version":"v","currency":"USD","models":[]}`, `"containerSecond" is required`},
		"misspelt field":   {`{"version":"v","currency":"USD","containerSecond":"0","models":[{"provider":"a","model":"m","inputPerMilion":"1","outputPerMillion":"1"}]}`, "unknown field"},
		"missing price":    {`{"version":"v","currency":"USD","containerSecond":"0","models":[{"provider":"a","model":"m","outputPerMillion":"1"}]}`, "models[0] (a/m)"},
		"negative price":   {`{"version":"v","currency":"USD","containerSecond":"0","models":[{"provider":"a","model":"m","inputPerMillion":"-1","outputPerMillion":"1"}]}`, "non-negative"},
		"too precise":      {`{"version":"v","currency":"USD","containerSecond":"0.0000001","models":[]}`, "6 decimal places"},
		"duplicate":        {`{"version":"v","currency":"USD","containerSecond":"0","models":[{"provider":"a","model":"m","inputPerMillion":"1","outputPerMillion":"1"},{"provider":"A","model":"M","inputPerMillion":"1","outputPerMillion":"1"}]}`, "listed twice"},
		"star in middle":   {`{"version":"v","currency":"USD","containerSecond":"0","models":[{"provider":"a","model":"m*x","inputPerMillion":"1","outputPerMillion":"1"}]}`, `"model" must be`},
		"trailing garbage": {`{"version":"v","currency":"USD","containerSecond":"0","models":[]} {}`, "data after"},
	}
	for name, tt := range tests {
		_, err := pricing.Parse([]byte(tt.doc))
		require.ErrorContains(t, err, tt.want, name)
	}
}

func TestParse_DigestIgnoresFormattingOrderAndNotes(t *testing.T) {
	t.Parallel()
	a, err := pricing.Parse([]byte(`{"version":"v","currency":"USD","containerSecond":"0.00001","models":[
		{"provider":"a","model":"m1","inputPerMillion":"1","outputPerMillion":"2"},
		{"provider":"b","model":"m2","inputPerMillion":"3.0","outputPerMillion":"4","note":"x"}]}`))
	require.NoError(t, err)
	b, err := pricing.Parse([]byte(`{"note":"reordered","models":[
		{"provider":"B","model":"M2","inputPerMillion":3,"outputPerMillion":"4.000000","cachedPerMillion":"3"},
		{"provider":"a","model":"m1","inputPerMillion":"1","outputPerMillion":"2"}],
		"containerSecond":0.00001,"currency":"USD","version":"v"}`))
	require.NoError(t, err)
	require.Equal(t, a.DigestHex(), b.DigestHex())

	again, err := pricing.Parse(a.Canonical())
	require.NoError(t, err, "the canonical form parses")
	require.Equal(t, a.DigestHex(), again.DigestHex(), "and to the same table")

	relabelled, err := pricing.Parse([]byte(`{"version":"v2","currency":"USD","containerSecond":"0.00001","models":[]}`))
	require.NoError(t, err)
	require.NotEqual(t, a.DigestHex(), relabelled.DigestHex())
	var doc map[string]any
	require.NoError(t, json.Unmarshal(a.Canonical(), &doc))
	require.NotContains(t, doc, "note")
}

func TestDefault_ParsesAndLoadEmptyPathIsDefault(t *testing.T) {
	t.Parallel()
	d := pricing.Default()
	require.Equal(t, "USD", d.Currency())
	loaded, err := pricing.Load("")
	require.NoError(t, err)
	require.Equal(t, d.DigestHex(), loaded.DigestHex())

	path := filepath.Join(t.TempDir(), "prices.json")
	require.NoError(t, os.WriteFile(path, []byte(sample), 0o600))
	fromFile, err := pricing.Load(path)
	require.NoError(t, err)
	require.Equal(t, "test-1", fromFile.Label())
	_, err = pricing.Load(filepath.Join(t.TempDir(), "missing.json"))
	require.ErrorContains(t, err, "read price file")
}
