package main

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/convergence-dev/convergence/internal/platform"
	"github.com/convergence-dev/convergence/services/provisioner"
)

// The commands find the installation's table from the instance id in its state dir; tests
// run as root, as the provisioner must.
func TestEgress_ShowsAndRemovesTheInstallationsRules(t *testing.T) {
	t.Parallel()
	dataDir := t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(dataDir, "provisioner"), 0o700))
	require.NoError(t, os.WriteFile(filepath.Join(dataDir, "provisioner", provisioner.InstanceFile), []byte("c0ffee01\n"), 0o600))
	args := []string{"-data-dir", dataDir, "-provisioner.runtime.name-prefix", "cvgt-" + t.Name()}

	var cfg platform.Config
	cfg.DataDir = dataDir
	cfg.Provisioner.Runtime.NamePrefix = "cvgt-" + t.Name()
	p, err := platform.EgressPolicy(cfg)
	require.NoError(t, err)
	p.APIPort = 3000
	t.Cleanup(func() { _ = p.Remove() })

	var out bytes.Buffer
	require.NoError(t, run(append([]string{"egress", "show"}, args...), &out, &out))
	require.Contains(t, out.String(), "table inet "+p.Table+" is not installed")

	require.NoError(t, p.Apply())
	out.Reset()
	require.NoError(t, run(append([]string{"egress", "show"}, args...), &out, &out))
	require.Contains(t, out.String(), "tenant bridges "+p.Prefix+"*")
	require.Contains(t, out.String(), "input: platform tcp dport 3000 accept # the platform API")
	require.Contains(t, out.String(), "forward: internet daddr 169.254.0.0/16 drop")

	out.Reset()
	require.NoError(t, run(append([]string{"egress", "remove"}, args...), &out, &out))
	require.Contains(t, out.String(), "removed table inet "+p.Table)
	_, err = p.Installed()
	require.ErrorIs(t, err, os.ErrNotExist)

	require.ErrorContains(t, run([]string{"egress", "show", "-data-dir", t.TempDir()}, &out, &out), "point -provisioner.state-dir")
	require.ErrorContains(t, run([]string{"egress"}, &out, &out), `"egress show [flags]"`)
}
