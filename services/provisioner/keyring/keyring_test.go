package keyring_test

import (
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/convergence-dev/convergence/internal/apikey"
	"github.com/convergence-dev/convergence/internal/pgtest"
	"github.com/convergence-dev/convergence/services/provisioner/keyring"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(pgtest.Wrap(m))
}

func TestLoadOrCreate_NewFileThenReload_SameKeyPrivateFile(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "state", "provisioner.key")
	k1, err := keyring.LoadOrCreate(path)
	require.NoError(t, err)
	info, err := os.Stat(path)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), info.Mode().Perm())
	k2, err := keyring.LoadOrCreate(path)
	require.NoError(t, err)
	require.Equal(t, k1.ID(), k2.ID())
}

func TestLoadOrCreate_ConcurrentFirstStarts_OneKey(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "provisioner.key")
	ids := make([]string, 8)
	var wg sync.WaitGroup
	for i := range ids {
		wg.Go(func() {
			k, err := keyring.LoadOrCreate(path)
			if err == nil {
				ids[i] = k.ID()
			}
		})
	}
	wg.Wait()
	for _, id := range ids {
		require.Equal(t, ids[0], id)
	}
}

func TestLoadOrCreate_NotAKeyFile_SaysSo(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "provisioner.key")
	require.NoError(t, os.WriteFile(path, []byte("hello\n"), 0o600))
	_, err := keyring.LoadOrCreate(path)
	require.ErrorContains(t, err, "not a provisioner key file")
}

func TestSeal_RegisteredKeys_EachOpensTheTenantKey_NothingPlainStored(t *testing.T) {
	t.Parallel()
	pool := pgtest.New(t)
	ctx := t.Context()
	var envID int64
	require.NoError(t, pool.QueryRow(ctx, `INSERT INTO environments (org_id, name, status) VALUES (1, 'sealed', 'provisioning') RETURNING id`).Scan(&envID))
	key, _ := apikey.New()

	require.ErrorIs(t, keyring.Seal(ctx, pool, envID, key), keyring.ErrNoRecipients)

	a, err := keyring.New()
	require.NoError(t, err)
	b, err := keyring.New()
	require.NoError(t, err)
	require.NoError(t, a.Register(ctx, pool))
	require.NoError(t, a.Register(ctx, pool), "registering twice is fine")
	require.NoError(t, b.Register(ctx, pool))
	require.NoError(t, keyring.Seal(ctx, pool, envID, key))

	for _, k := range []*keyring.Keyring{a, b} {
		got, err := k.OpenFor(ctx, pool, envID)
		require.NoError(t, err)
		require.Equal(t, key, got)
	}
	var stored [][]byte
	rows, err := pool.Query(ctx, `SELECT sealed FROM tenant_secrets WHERE env_id = $1`, envID)
	require.NoError(t, err)
	for rows.Next() {
		var b []byte
		require.NoError(t, rows.Scan(&b))
		stored = append(stored, b)
	}
	require.NoError(t, rows.Err())
	require.Len(t, stored, 2)
	for _, s := range stored {
		require.NotContains(t, string(s), key[len(apikey.Prefix):], "the key is not stored in the clear")
	}

	// A key sealed for one tenant does not open as another's.
	var sealed []byte
	require.NoError(t, pool.QueryRow(ctx, `SELECT sealed FROM tenant_secrets WHERE env_id = $1 AND key_id = $2`, envID, a.ID()).Scan(&sealed))
	_, err = a.Open(envID+1, sealed)
	require.Error(t, err)

	// A provisioner registered later cannot open what was sealed before it.
	c, err := keyring.New()
	require.NoError(t, err)
	require.NoError(t, c.Register(ctx, pool))
	_, err = c.OpenFor(ctx, pool, envID)
	require.ErrorIs(t, err, keyring.ErrNotSealed)

	require.NoError(t, keyring.Forget(ctx, pool, envID))
	_, err = a.OpenFor(ctx, pool, envID)
	require.ErrorIs(t, err, keyring.ErrNotSealed)
}
