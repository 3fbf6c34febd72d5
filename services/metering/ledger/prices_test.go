package ledger_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/convergence-dev/convergence/internal/pgtest"
	"github.com/convergence-dev/convergence/services/metering/ledger"
	"github.com/convergence-dev/convergence/services/metering/pricing"
)

func TestRegisterPrices_SameTableSameVersion_ChangedTableNeedsANewLabel(t *testing.T) {
	t.Parallel()
	pool := pgtest.New(t)
	_, err := ledger.CurrentPrices(t.Context(), pool)
	require.ErrorIs(t, err, ledger.ErrNoPrices)

	a := register(t, pool, testPrices)
	again := register(t, pool, testPrices)
	require.Equal(t, a.VersionID, again.VersionID, "the same prices are the same version")

	changed, err := pricing.Parse([]byte(`{"version": "test", "currency": "USD", "containerSecond": "0.5", "models": []}`))
	require.NoError(t, err)
	_, err = ledger.RegisterPrices(t.Context(), pool, changed)
	require.ErrorContains(t, err, `"test" is already registered with other prices`)

	euro, err := pricing.Parse([]byte(`{"version": "eu", "currency": "EUR", "containerSecond": "0", "models": []}`))
	require.NoError(t, err)
	_, err = ledger.RegisterPrices(t.Context(), pool, euro)
	require.ErrorContains(t, err, "in EUR, but the ledger is in USD")

	b := register(t, pool, `{"version": "test-2", "currency": "USD", "containerSecond": "0.5", "models": []}`)
	require.NotEqual(t, a.VersionID, b.VersionID)
	cur, err := ledger.CurrentPrices(t.Context(), pool)
	require.NoError(t, err)
	require.Equal(t, b.VersionID, cur.VersionID)
	require.Equal(t, b.DigestHex(), cur.DigestHex(), "the stored table loads back as registered")

	register(t, pool, testPrices) // loading the first again makes it current again
	cur, err = ledger.CurrentPrices(t.Context(), pool)
	require.NoError(t, err)
	require.Equal(t, a.VersionID, cur.VersionID)
}

func TestParseDimensions(t *testing.T) {
	t.Parallel()
	got, err := ledger.ParseDimensions(" Tenant,model ,month")
	require.NoError(t, err)
	require.Equal(t, []ledger.Dimension{ledger.ByTenant, ledger.ByModel, ledger.ByMonth}, got)
	got, err = ledger.ParseDimensions("")
	require.NoError(t, err)
	require.Empty(t, got)
	for in, want := range map[string]string{
		"week":         `unknown groupBy "week"`,
		"day,month":    "exclude each other",
		"model,model":  "twice",
		"tenant;model": "unknown groupBy",
		"organisation": "unknown groupBy",
	} {
		_, err := ledger.ParseDimensions(in)
		require.ErrorContains(t, err, want, in)
	}
}

func TestParseRange(t *testing.T) {
	t.Parallel()
	now := time.Date(2025, 3, 14, 15, 4, 5, 0, time.UTC)
	from, to, err := ledger.ParseRange("", "", now)
	require.NoError(t, err)
	require.Equal(t, time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC), from, "the month to date by default")
	require.Equal(t, time.Date(2025, 3, 14, 0, 0, 0, 0, time.UTC), to)
	from, to, err = ledger.ParseRange("", "2024-02-10", now)
	require.NoError(t, err)
	require.Equal(t, time.Date(2024, 2, 1, 0, 0, 0, 0, time.UTC), from, "the month of the last day")
	require.Equal(t, time.Date(2024, 2, 10, 0, 0, 0, 0, time.UTC), to)
	for _, tt := range [][2]string{{"2025-13-01", ""}, {"yesterday", ""}, {"", "2025-02-30"}, {"2025-03-10", "2025-03-09"}, {"2025-03-01T00:00:00Z", ""}} {
		_, _, err := ledger.ParseRange(tt[0], tt[1], now)
		require.Error(t, err, "%q..%q", tt[0], tt[1])
	}
}
