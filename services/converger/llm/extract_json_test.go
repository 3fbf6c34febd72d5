package llm_test

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/convergence-dev/convergence/services/converger/llm"
)

func TestExtractJSON(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		text   string
		want   string
		wantOK bool
	}{
		{"a bare object", `{"a":1}`, `{"a":1}`, true},
		{"surrounding whitespace", "\n  {\"a\":1}\n", `{"a":1}`, true},
		{"a json code fence", "```json\n{\"a\":1}\n```", `{"a":1}`, true},
		{"a bare code fence", "```\n{\"a\":1}\n```", `{"a":1}`, true},
		{"prose around the object", "Sure! Here it is: {\"a\": {\"b\": 2}} Hope it helps.", `{"a": {"b": 2}}`, true},
		{"prose only", "I cannot answer that.", "", false},
		{"a truncated object", `{"a": "unterminated`, "", false},
		{"an array is not an object", `[1,2]`, "", false},
		{"empty", "", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, ok := llm.ExtractJSON(tt.text)
			require.Equal(t, tt.wantOK, ok)
			require.Equal(t, tt.want, got)
		})
	}
}

func TestUsage_TotalCountsCacheTokensOnce(t *testing.T) {
	t.Parallel()
	u := llm.Usage{InputTokens: 1000, OutputTokens: 200, CachedTokens: 600, CacheCreationTokens: 100}
	require.Equal(t, int64(1200), u.Total())
	sum := u.Add(llm.Usage{InputTokens: 10, OutputTokens: 5, CachedTokens: 1})
	require.Equal(t, llm.Usage{InputTokens: 1010, OutputTokens: 205, CachedTokens: 601, CacheCreationTokens: 100}, sum)

	raw, err := json.Marshal(u)
	require.NoError(t, err)
	require.JSONEq(t, `{"inputTokens":1000,"outputTokens":200,"cachedTokens":600,"cacheCreationTokens":100,"totalTokens":1200}`, string(raw))
	var back llm.Usage
	require.NoError(t, json.Unmarshal(raw, &back))
	require.Equal(t, u, back)
}
