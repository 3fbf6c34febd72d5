package money_test

import (
	"encoding/json"
	"math"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/convergence-dev/convergence/pkg/money"
)

func TestParseMicros(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]money.Micros{
		"0": 0, "3": 3_000_000, "3.00": 3_000_000, "0.30": 300_000, "0.075": 75_000,
		"0.000001": 1, "15.5": 15_500_000, " 2.5 ": 2_500_000, "1000000000000": 1_000_000_000_000_000_000,
	} {
		got, err := money.ParseMicros(in)
		require.NoError(t, err, in)
		require.Equal(t, want, got, in)
	}
	for _, in := range []string{"", "-1", "1.", ".5", "1.0000001", "abc", "1e3", "1,5", "+2", "1000000000001", "99999999999999999999"} {
		_, err := money.ParseMicros(in)
		require.Error(t, err, in)
	}
}

func TestMicros_String(t *testing.T) {
	t.Parallel()
	require.Equal(t, "3.000000", money.Micros(3_000_000).String())
	require.Equal(t, "0.000012", money.Micros(12).String())
	require.Equal(t, "-0.000012", money.Micros(-12).String())
	require.Equal(t, "-9223372036854.775808", money.Micros(math.MinInt64).String())
}

func TestMicros_JSON(t *testing.T) {
	t.Parallel()
	var m struct{ A, B money.Micros }
	require.NoError(t, json.Unmarshal([]byte(`{"A": "0.30", "B": 12.5}`), &m))
	require.Equal(t, money.Micros(300_000), m.A)
	require.Equal(t, money.Micros(12_500_000), m.B)
	b, err := json.Marshal(m)
	require.NoError(t, err)
	require.JSONEq(t, `{"A": "0.300000", "B": "12.500000"}`, string(b))
	require.Error(t, json.Unmarshal([]byte(`{"A": "1.5e3"}`), &m))
}
