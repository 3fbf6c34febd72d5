package pglocal

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestFindBinaries_NoneOnPathOrInFallback_ErrorSaysHowToInstall(t *testing.T) {
	t.Setenv("PATH", t.TempDir())

	_, err := findBinaries(t.Context(), "", "/nonexistent/*/bin")
	require.ErrorIs(t, err, ErrBinariesNotFound)
	require.EqualError(t, err, "PostgreSQL server binaries not found on PATH: install Debian's "+
		"postgresql-15 package (apt-get install postgresql) or set DATABASE_URL")
}

func TestFindBinaries_NoneOnPath_FoundInDebianDirectory(t *testing.T) {
	t.Setenv("PATH", t.TempDir())

	bins, err := findBinaries(t.Context(), "", debianBinGlob)
	require.NoError(t, err, "this test needs Debian's postgresql package: apt-get install postgresql")
	require.FileExists(t, bins.initdb)
	require.GreaterOrEqual(t, bins.major, 10)
}
