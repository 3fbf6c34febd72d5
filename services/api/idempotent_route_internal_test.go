package api

import (
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/convergence-dev/convergence/internal/pgrole"
	"github.com/convergence-dev/convergence/internal/pgtest"
)

func TestRenewClaim_KeepsItsOwnClaimFreshWhileTheRequestRuns_AndStopsWithIt(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	s := &Service{deps: Deps{Pool: db.For(t, pgrole.API)}, logger: slog.New(slog.DiscardHandler)}
	claim, other := [16]byte{1}, [16]byte{2}
	_, err := db.Pool.Exec(t.Context(), `
		INSERT INTO api.operator_idempotency_keys (operation, key, body_hash, status, answer, created_at, claim)
		VALUES ('POST /x', 'k', 'h', 0, 'null', now() - interval '1 minute', $1)`, claim)
	require.NoError(t, err)
	age := func() time.Duration {
		var seconds float64
		require.NoError(t, db.Pool.QueryRow(t.Context(),
			`SELECT extract(epoch FROM now() - created_at) FROM api.operator_idempotency_keys WHERE key = 'k'`).Scan(&seconds))
		return time.Duration(seconds * float64(time.Second))
	}

	// A request whose lease lapsed and whose key a retry took renews nothing of the retry's.
	stop := s.renewClaim(t.Context(), "POST /x", "k", other, 20*time.Millisecond)
	time.Sleep(100 * time.Millisecond)
	stop()
	require.Greater(t, age(), 50*time.Second, "another claim was renewed")

	stop = s.renewClaim(t.Context(), "POST /x", "k", claim, 20*time.Millisecond)
	require.Eventually(t, func() bool { return age() < time.Second }, 10*time.Second, 10*time.Millisecond, "the claim was not renewed")
	stop()
	stop() // A second call, as the handler's deferred one, returns at once.
	_, err = db.Pool.Exec(t.Context(), `UPDATE api.operator_idempotency_keys SET created_at = now() - interval '1 minute' WHERE key = 'k'`)
	require.NoError(t, err)
	time.Sleep(100 * time.Millisecond) // five renewals' time
	require.Greater(t, age(), 50*time.Second, "renewed after stop")
}
