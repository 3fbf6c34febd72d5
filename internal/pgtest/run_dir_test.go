package pgtest

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestNewRunDir_DeadRunsLeftBehind_RemovedAndLiveOnesKept(t *testing.T) {
	t.Parallel()
	base := filepath.Join(t.TempDir(), "base")
	live, err := newRunDir(base)
	require.NoError(t, err)
	t.Cleanup(func() { _ = live.remove() })

	// A test binary that died left its run directory with an unlocked lock file, and another
	// died between creating its directory and locking it, long enough ago.
	dead := filepath.Join(base, "run-dead")
	require.NoError(t, os.MkdirAll(filepath.Join(dead, "data"), 0o700))
	require.NoError(t, os.WriteFile(filepath.Join(dead, "lock"), nil, 0o600))
	halfMade := filepath.Join(base, "new-halfmade")
	require.NoError(t, os.Mkdir(halfMade, 0o700))
	old := time.Now().Add(-2 * abandonedAfter)
	require.NoError(t, os.Chtimes(halfMade, old, old))
	young := filepath.Join(base, "new-young")
	require.NoError(t, os.Mkdir(young, 0o700))

	next, err := newRunDir(base)
	require.NoError(t, err)
	t.Cleanup(func() { _ = next.remove() })

	require.NoDirExists(t, dead)
	require.NoDirExists(t, halfMade)
	require.DirExists(t, young, "a young half-made directory may be about to be locked")
	require.DirExists(t, live.dir, "a locked run directory belongs to a live test binary")
	require.NoError(t, next.remove())
	require.NoDirExists(t, next.dir)
}
