package dockertest

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// ComposeCommand returns the compose command of this machine: "docker compose" (v2) when the
// docker CLI has the plugin, else "docker-compose" (v1). It fails the test when neither runs.
func ComposeCommand(t testing.TB) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, cmd := range [][]string{{"docker", "compose"}, {"docker-compose"}} {
		args := append(append([]string{}, cmd[1:]...), "version")
		if err := exec.CommandContext(ctx, cmd[0], args...).Run(); err == nil {
			return cmd
		}
	}
	t.Fatalf("neither `docker compose` nor `docker-compose` runs here; install one (Debian: apt-get install docker-compose)")
	return nil
}

// Compose runs the compose command with args and returns its combined output. It fails the
// test, showing that output, when the command fails.
func Compose(ctx context.Context, t testing.TB, args ...string) string {
	t.Helper()
	cmd := ComposeCommand(t)
	c := exec.CommandContext(ctx, cmd[0], append(append([]string{}, cmd[1:]...), args...)...)
	c.WaitDelay = 5 * time.Second
	out, err := c.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", strings.Join(cmd, " "), strings.Join(args, " "), err, out)
	}
	return string(out)
}
