package dockertest

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/build"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/client"
	"github.com/docker/docker/pkg/stdcopy"
)

// probeImageTag is the image of cmd probe (internal/dockertest/probe), built by the tests.
const probeImageTag = "convergence/test-probe:dev"

// probeImage memoizes the probe image build for the test binary.
var probeImage = struct {
	once sync.Once
	err  error
}{}

// ProbeResult is what the probe saw of one target.
type ProbeResult struct {
	Target   string `json:"target"`
	Answered bool   `json:"answered"`
	Status   int    `json:"status"`
	Error    string `json:"error"`
}

// Probe runs the probe in the network namespace of container (as a tenant would see the
// network), against targets (tcp://host:port, or http URLs, sent with bearer when it is not
// empty), and returns what it saw, by target. It builds the probe image FROM scratch once per
// test binary; nothing is pulled.
func Probe(t testing.TB, cli *client.Client, containerID, bearer string, targets ...string) map[string]ProbeResult {
	t.Helper()
	probeImage.once.Do(func() { probeImage.err = buildProbeImage(cli) })
	if probeImage.err != nil {
		t.Fatalf("probe image: %v", probeImage.err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	created, err := cli.ContainerCreate(ctx,
		&container.Config{Image: probeImageTag, Cmd: targets, Env: []string{"PROBE_BEARER=" + bearer}, User: "65532:65532"},
		&container.HostConfig{NetworkMode: container.NetworkMode("container:" + containerID), ReadonlyRootfs: true, CapDrop: []string{"ALL"}},
		nil, nil, "")
	if err != nil {
		t.Fatalf("create probe: %v", err)
	}
	defer func() {
		_ = cli.ContainerRemove(context.Background(), created.ID, container.RemoveOptions{Force: true})
	}()
	waitC, errC := cli.ContainerWait(ctx, created.ID, container.WaitConditionNextExit)
	if err := cli.ContainerStart(ctx, created.ID, container.StartOptions{}); err != nil {
		t.Fatalf("start probe: %v", err)
	}
	select {
	case <-waitC:
	case err := <-errC:
		t.Fatalf("wait for probe: %v", err)
	}
	logs, err := cli.ContainerLogs(ctx, created.ID, container.LogsOptions{ShowStdout: true, ShowStderr: true})
	if err != nil {
		t.Fatalf("probe logs: %v", err)
	}
	defer logs.Close()
	var stdout, stderr bytes.Buffer
	if _, err := stdcopy.StdCopy(&stdout, &stderr, logs); err != nil {
		t.Fatalf("probe logs: %v", err)
	}
	out := map[string]ProbeResult{}
	sc := bufio.NewScanner(&stdout)
	for sc.Scan() {
		var r ProbeResult
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("probe output %q: %v (stderr: %s)", sc.Text(), err, stderr.String())
		}
		out[r.Target] = r
	}
	if len(out) != len(targets) {
		t.Fatalf("probe reported %d of %d targets; stderr: %s", len(out), len(targets), stderr.String())
	}
	return out
}

// buildProbeImage compiles cmd probe statically and builds an image of it FROM scratch.
func buildProbeImage(cli *client.Client) error {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dir, err := os.MkdirTemp("", "probe-build-")
	if err != nil {
		return err
	}
	defer func() { _ = os.RemoveAll(dir) }()
	bin := filepath.Join(dir, "probe")
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", bin, "github.com/convergence-dev/convergence/internal/dockertest/probe")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+runtime.GOARCH)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build probe: %w: %s", err, out)
	}
	binary, err := os.ReadFile(bin) //nolint:gosec // Our own build output.
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range []struct {
		name string
		mode int64
		data []byte
	}{
		{"Dockerfile", 0o644, []byte("FROM scratch\nCOPY probe /probe\nENTRYPOINT [\"/probe\"]\n")},
		{"probe", 0o755, binary},
	} {
		if err := tw.WriteHeader(&tar.Header{Name: f.name, Mode: f.mode, Size: int64(len(f.data))}); err != nil {
			return err
		}
		if _, err := tw.Write(f.data); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	resp, err := cli.ImageBuild(ctx, &buf, build.ImageBuildOptions{Tags: []string{probeImageTag}, Remove: true, ForceRemove: true})
	if err != nil {
		return fmt.Errorf("build probe image: %w", err)
	}
	defer resp.Body.Close()
	var msgs bytes.Buffer
	if _, err := io.Copy(&msgs, resp.Body); err != nil {
		return err
	}
	if bytes.Contains(msgs.Bytes(), []byte(`"error"`)) {
		return fmt.Errorf("build probe image: %s", msgs.String())
	}
	return nil
}
