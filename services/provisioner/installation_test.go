package provisioner_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/convergence-dev/convergence/internal/pgrole"
	"github.com/convergence-dev/convergence/internal/pgtest"
	"github.com/convergence-dev/convergence/services/provisioner"
)

func TestInstallation_MadeOnceKeptAndEmptyForAnInstallationFromBefore(t *testing.T) {
	t.Parallel()
	fresh, stateDir := pgtest.NewDB(t), filepath.Join(t.TempDir(), "provisioner")
	id, err := provisioner.Installation(t.Context(), fresh.For(t, pgrole.Provisioner), stateDir)
	require.NoError(t, err)
	require.Regexp(t, `^[0-9a-f]{8}$`, id)
	kept, err := os.ReadFile(filepath.Join(stateDir, provisioner.InstanceFile))
	require.NoError(t, err)
	require.Equal(t, id+"\n", string(kept), "also kept in the state dir")
	again, err := provisioner.Installation(t.Context(), fresh.For(t, pgrole.Provisioner), stateDir)
	require.NoError(t, err)
	require.Equal(t, id, again, "kept: every replica and later start has the same")
	other, err := provisioner.Installation(t.Context(), pgtest.NewDB(t).For(t, pgrole.Provisioner), "")
	require.NoError(t, err)
	require.NotEqual(t, id, other, "another database, another installation")

	// A state dir of one installation with the database of another: refused, not adopted.
	_, err = provisioner.Installation(t.Context(), pgtest.NewDB(t).For(t, pgrole.Provisioner), stateDir)
	require.ErrorContains(t, err, "belongs to installation \""+id+"\"")

	// A database that ran tenants before instance ids: their objects keep their names.
	old := pgtest.NewDB(t)
	_, err = old.Pool.Exec(t.Context(), `INSERT INTO provisioner.environments (org_id, name, status) VALUES (1, 'acme', 'running')`)
	require.NoError(t, err)
	legacy, err := provisioner.Installation(t.Context(), old.For(t, pgrole.Provisioner), "")
	require.NoError(t, err)
	require.Empty(t, legacy)
}
