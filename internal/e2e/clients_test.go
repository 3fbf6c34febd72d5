package e2e_test

import (
	"context"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/convergence-dev/convergence/internal/platform"
)

// The JavaScript and Python clients (clients/js, clients/python) pass their own test suites,
// `node --test` and `python3 -m unittest`, against the real platform with a tenant's key:
// converge and its shortcuts, wait, stream, cancel, errors, me, usage, and a real webhook
// delivery each verifies. They reach the API through a proxy in this process, so that every
// call they make is checked against the OpenAPI document like the Go tests' (TestMain).
func TestClients_JavaScriptAndPython_PassTheirSuitesAgainstTheRealAPI(t *testing.T) {
	t.Parallel()
	s := startStack(t, func(c *platform.Config) { c.Converger.Webhook.AllowPrivateTargets = true })
	api, err := url.Parse(s.API)
	require.NoError(t, err)
	// The proxy's transport is http.DefaultTransport, which TestMain checks; -1 flushes every
	// write, for the event streams.
	proxy := httptest.NewServer(&httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) { r.SetURL(api) }, FlushInterval: -1})
	t.Cleanup(proxy.Close)
	for _, c := range []struct {
		name, dir, program string
		args               []string
	}{
		{"javascript", "../../clients/js", "node", []string{"--test", "convergence.test.mjs"}},
		{"python", "../../clients/python", "python3", []string{"-m", "unittest", "-v", "test_convergence"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			program, err := exec.LookPath(c.program)
			require.NoError(t, err, "%s is needed for the %s client's tests (make deps installs it)", c.program, c.name)
			tn := s.spawn(t, "e2e-client-"+c.name, true)
			dir, err := filepath.Abs(c.dir)
			require.NoError(t, err)
			ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, program, c.args...)
			cmd.Dir = dir
			cmd.Env = append(cmd.Environ(), "CONVERGENCE_API_URL="+proxy.URL, "CONVERGENCE_API_KEY="+tn.APIKey, "NO_COLOR=1")
			out, err := cmd.CombinedOutput()
			require.NoError(t, err, "%s %v:\n%s", c.program, c.args, out)
			t.Logf("%s", out)
		})
	}
}
