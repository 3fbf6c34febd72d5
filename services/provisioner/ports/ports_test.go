package ports_test

import (
	"context"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/convergence-dev/convergence/internal/pgtest"
	"github.com/convergence-dev/convergence/services/provisioner/ports"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(pgtest.Wrap(m))
}

func newTenant(t *testing.T, pool *pgxpool.Pool, name string) int64 {
	t.Helper()
	var id int64
	require.NoError(t, pool.QueryRow(t.Context(), `INSERT INTO environments (org_id, name, status) VALUES (1, $1, 'provisioning') RETURNING id`, name).Scan(&id))
	return id
}

func lease(t *testing.T, pool *pgxpool.Pool, envID int64) (int, error) {
	t.Helper()
	var port int
	err := pgx.BeginFunc(t.Context(), pool, func(tx pgx.Tx) (err error) {
		port, err = ports.Lease(t.Context(), tx, envID)
		return err
	})
	return port, err
}

func TestLease_DefaultPool_LowestFreeFrom3001_ReleasedPortReused(t *testing.T) {
	t.Parallel()
	pool := pgtest.New(t)
	a, b := newTenant(t, pool, "a"), newTenant(t, pool, "b")
	pa, err := lease(t, pool, a)
	require.NoError(t, err)
	require.Equal(t, 3001, pa)
	again, err := lease(t, pool, a)
	require.NoError(t, err)
	require.Equal(t, pa, again, "a tenant holds one port")
	pb, err := lease(t, pool, b)
	require.NoError(t, err)
	require.Equal(t, 3002, pb)
	var recorded int
	require.NoError(t, pool.QueryRow(t.Context(), `SELECT port FROM environments WHERE id = $1`, b).Scan(&recorded))
	require.Equal(t, pb, recorded)

	require.NoError(t, ports.Release(t.Context(), pool, a))
	require.NoError(t, ports.Release(t.Context(), pool, a), "idempotent")
	c := newTenant(t, pool, "c")
	pc, err := lease(t, pool, c)
	require.NoError(t, err)
	require.Equal(t, 3001, pc, "the lowest free port again")
}

func TestLease_ConcurrentTenants_DistinctPorts(t *testing.T) {
	t.Parallel()
	pool := pgtest.New(t)
	const n = 30
	got := make([]int, n)
	var wg sync.WaitGroup
	for i := range n {
		id := newTenant(t, pool, "t"+strconv.Itoa(i))
		wg.Go(func() {
			p, err := lease(t, pool, id)
			if err == nil {
				got[i] = p
			}
		})
	}
	wg.Wait()
	seen := map[int]bool{}
	for _, p := range got {
		require.GreaterOrEqual(t, p, 3001)
		require.False(t, seen[p], "port %d leased twice", p)
		seen[p] = true
	}
}

func TestSync_NarrowRange_PoolExhaustedThenMoveSkipsQuarantinedPort(t *testing.T) {
	t.Parallel()
	pool := pgtest.New(t)
	ctx := t.Context()
	free, err := ports.Sync(ctx, pool, 5000, 5001)
	require.NoError(t, err)
	require.Equal(t, 2, free)
	a, b, c := newTenant(t, pool, "a"), newTenant(t, pool, "b"), newTenant(t, pool, "c")
	pa, err := lease(t, pool, a)
	require.NoError(t, err)
	require.Equal(t, 5000, pa)
	_, err = lease(t, pool, b)
	require.NoError(t, err)
	_, err = lease(t, pool, c)
	require.ErrorIs(t, err, ports.ErrNoFreePort)

	// Something else holds 5000: a moves off it, and nobody gets it during the quarantine.
	require.NoError(t, ports.Release(ctx, pool, b))
	var moved int
	require.NoError(t, pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) (err error) {
		moved, err = ports.Move(ctx, tx, a, time.Hour)
		return err
	}))
	require.Equal(t, 5001, moved)
	_, err = lease(t, pool, c)
	require.ErrorIs(t, err, ports.ErrNoFreePort, "5000 is quarantined")

	// A new range adds its ports and drops the free ones outside it, never a leased one (5001).
	free, err = ports.Sync(ctx, pool, 5002, 5003)
	require.NoError(t, err)
	require.Equal(t, 2, free)
	var n int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM tenant_ports`).Scan(&n))
	require.Equal(t, 3, n)
}

func TestProbe_PortHeld_Error_FreePort_Nil(t *testing.T) {
	t.Parallel()
	ln, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := ln.Addr().(*net.TCPAddr).Port
	require.ErrorContains(t, ports.Probe(t.Context(), "127.0.0.1", port), "in use")
	require.NoError(t, ln.Close())
	// Free now, unless another process of this machine took it meanwhile: then another port.
	for try := 1; ; try++ {
		err := ports.Probe(t.Context(), "127.0.0.1", port)
		if err == nil {
			break
		}
		require.Less(t, try, 5, "no port found free: %v", err)
		ln, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", "127.0.0.1:0")
		require.NoError(t, err)
		port = ln.Addr().(*net.TCPAddr).Port
		require.NoError(t, ln.Close())
	}
}
