package tenanttemplates

import (
	"archive/tar"
	"bytes"
	"io"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestBuildContext_HoldsDockerfileAndExecutableBinary(t *testing.T) {
	t.Parallel()
	b, err := buildContext([]byte("FROM scratch\n"), []byte("\x7fELF"))
	require.NoError(t, err)
	tr := tar.NewReader(bytes.NewReader(b))
	got := map[string]int64{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		require.NoError(t, err)
		got[h.Name] = h.Mode
	}
	require.Equal(t, map[string]int64{"Dockerfile": 0o644, "tenant": 0o755}, got)
	require.True(t, bytes.Contains(goDockerfile, []byte("FROM scratch")), "the embedded Dockerfile")
	require.True(t, bytes.Contains(goDockerfile, []byte("USER 65532:65532")))
}

func TestReadBuildOutput_BuilderError_Returned(t *testing.T) {
	t.Parallel()
	ok := `{"stream":"Step 1/2 : FROM scratch\n"}{"stream":"Successfully built abc\n"}`
	require.NoError(t, readBuildOutput(strings.NewReader(ok)))

	failed := `{"stream":"Step 1/2 : COPY nope /\n"}{"errorDetail":{"message":"COPY failed: file not found"},"error":"COPY failed: file not found"}`
	err := readBuildOutput(strings.NewReader(failed))
	require.ErrorContains(t, err, "COPY failed: file not found")
	require.ErrorContains(t, err, "Step 1/2")

	require.ErrorContains(t, readBuildOutput(strings.NewReader(`{"stream":`)), "read build output")
}
