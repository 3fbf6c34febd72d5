package engine

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestSimilarity(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		a, b   string
		lo, hi float64
	}{
		{"identical texts", "Use a token bucket per tenant.", "Use a token bucket per tenant.", 1, 1},
		{"case and punctuation do not matter", "Use a token bucket, per tenant!", "use A TOKEN bucket per-tenant", 1, 1},
		{"unrelated texts", "Use a token bucket per tenant.", "Deploy the database in three zones.", 0, 0},
		{"word order matters", "cache before queue", "queue before cache", 0, 0},
		{"one sentence changed of three", "Cache per tenant. Queue writes. Retry on failure.", "Cache per tenant. Queue writes. Alert on errors.", 0.4, 0.8},
		{"both empty", "", "", 1, 1},
		{"one empty", "text here", "", 0, 0},
		{"single identical words", "yes", "Yes.", 1, 1},
		{"unicode letters count as words", "Größe prüfen, dann speichern", "größe PRÜFEN dann speichern", 1, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := jaccard(shingles(tt.a), shingles(tt.b))
			require.GreaterOrEqual(t, got, tt.lo)
			require.LessOrEqual(t, got, tt.hi)
			require.InDelta(t, got, jaccard(shingles(tt.b), shingles(tt.a)), 0, "similarity is symmetric")
		})
	}
}

func TestShingles_SortedAndUnique(t *testing.T) {
	t.Parallel()
	s := shingles(strings.Repeat("to be or not to be ", 20))
	require.Len(t, s, 5, "to-be, be-or, or-not, not-to, and be-to where the repeats meet")
	for i := 1; i < len(s); i++ {
		require.Less(t, s[i-1], s[i])
	}
}

func BenchmarkShingles(b *testing.B) {
	text := strings.Repeat("The service should cache requests per tenant with a bounded queue. ", 12)
	for b.Loop() {
		shingles(text)
	}
}
