package dockertest

import (
	"context"
	"testing"
	"time"

	"github.com/docker/docker/client"
)

// howToGetDocker ends every "no engine" failure.
const howToGetDocker = `Provisioner tests need a running Docker engine (API 1.41 or later).
Install it (Debian: apt-get install docker.io; then start dockerd, or systemctl start docker),
or point DOCKER_HOST at a running engine, and check that "docker version" shows a Server.`

// Client returns a client for the engine the environment names (DOCKER_HOST and friends, the
// local socket otherwise), its API version negotiated. It fails the test, never skips it,
// when the engine does not answer within 10 s. The client is closed when the test ends.
func Client(t testing.TB) *client.Client {
	t.Helper()
	cli, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		t.Fatalf("docker client: %v\n%s", err, howToGetDocker)
	}
	t.Cleanup(func() { _ = cli.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ping, err := cli.Ping(ctx)
	if err != nil {
		t.Fatalf("docker engine at %s does not answer: %v\n%s", cli.DaemonHost(), err, howToGetDocker)
	}
	// Settle the API version before tests share the client (see platform.connectDocker).
	cli.NegotiateAPIVersionPing(ping)
	return cli
}
