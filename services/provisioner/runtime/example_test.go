package runtime_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/docker/docker/client"

	"github.com/convergence-dev/convergence/services/provisioner/runtime"
)

// The provisioner's path for one tenant: run it hardened, wait until it answers, look at it,
// write its compose file, and remove it again, keeping its last logs.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))

	// main owns the client: it reads DOCKER_HOST and negotiates the API version.
	cli, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		log.Error("docker client", "err", err)
		return
	}
	defer func() { _ = cli.Close() }()

	rt, err := runtime.NewDocker(cli, runtime.DockerConfig{}, log)
	if err != nil {
		log.Error("runtime", "err", err)
		return
	}

	spec := runtime.Spec{
		EnvID: 1, OrgID: 1, Name: "acme-corp-ai",
		Image:    "convergence/tenant-go:dev",
		HostPort: 3001,
		Env: map[string]string{
			"CONVERGENCE_API_URL": "http://host.docker.internal:3000",
			"CONVERGENCE_API_KEY": "sk_tenant_abc123",
			"CONVERGENCE_ENV_ID":  "1",
		},
		Limits:     runtime.Limits{MemoryBytes: 128 << 20, NanoCPUs: 500_000_000, PIDs: 128},
		Generation: 1,
	}
	if _, err := rt.Ensure(ctx, spec); err != nil { // idempotent: safe on redelivery
		log.Error("ensure", "err", err)
		return
	}
	if err := rt.WaitHealthy(ctx, spec.EnvID, spec.HostPort); err != nil {
		log.Error("tenant did not become healthy", "err", err) // an *ExitError says why
		return
	}
	st, err := rt.Status(ctx, spec.EnvID)
	if err != nil {
		log.Error("status", "err", err)
		return
	}
	fmt.Printf("%s, %.1f%% cpu, %d of %d bytes\n", st.State, st.CPUPercent, st.MemoryBytes, st.MemoryLimitBytes)

	compose, err := rt.ComposeFile(spec)
	if err != nil {
		log.Error("compose file", "err", err)
		return
	}
	_ = os.WriteFile("tenant-1.compose.yml", compose, 0o600) // it holds the API key

	removed, err := rt.Remove(ctx, spec.EnvID, 10*time.Second) // idempotent too
	if err != nil {
		log.Error("remove", "err", err)
		return
	}
	fmt.Printf("archived %d bytes of logs\n", len(removed.LastLogs))
}
