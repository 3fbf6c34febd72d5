package engine

import (
	"math"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestComputeScore(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		in   scoreInput
		want int
	}{
		{"full agreement, no issues, settled and identical positions", scoreInput{100, 0, 0, 1}, 100},
		{"nothing agreed, many issues, all moving, nothing shared", scoreInput{0, 9, 1, 0}, 0},
		{"agreement weighs 40", scoreInput{100, 5, 1, 0}, 40},
		{"no open issues weighs 20", scoreInput{0, 0, 1, 0}, 20},
		{"settled positions weigh 15", scoreInput{0, 5, 0, 0}, 15},
		{"identical positions weigh 25", scoreInput{0, 5, 1, 1}, 25},
		{"each open issue takes 20 off its component", scoreInput{0, 2, 1, 0}, 12},
		{"a typical converging round", scoreInput{95, 0, 0.27, 1}, 94},
		{"a typical stalled round", scoreInput{45, 4, 0, 0.35}, 46},
		{"out-of-range inputs are clamped", scoreInput{150, -1, -0.5, 2}, 100},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := computeScore(tt.in)
			require.Equal(t, tt.want, s.Value)
			require.Equal(t, MethodVersion, s.MethodVersion)
			var sum, weights float64
			for _, c := range s.Breakdown.Components() {
				require.InDelta(t, c.Weight*c.Value, c.Points, 0.005+1e-9)
				sum += c.Points
				weights += c.Weight
			}
			require.InDelta(t, 1.0, weights, 1e-9)
			require.Equal(t, int(math.Round(sum)), s.Value, "the value is the sum of the breakdown")
		})
	}
}

func TestEmptyScore_ConsistentZero(t *testing.T) {
	t.Parallel()
	s := emptyScore()
	require.Zero(t, s.Value)
	var weights float64
	for _, c := range s.Breakdown.Components() {
		require.Zero(t, c.Points)
		weights += c.Weight
	}
	require.InDelta(t, 1.0, weights, 1e-9)
}
