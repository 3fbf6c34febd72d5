package dockertest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/volume"
	"github.com/docker/docker/client"
)

// RunLabel is the label that scopes Docker objects to one test.
const RunLabel = "convergence.test.run"

// Run scopes the Docker objects one test creates: put Labels on every object (a runtime
// under test takes them as its extra labels) and start every name with Prefix.
type Run struct {
	// ID is unique per test: random, so parallel tests and test binaries never share it.
	ID string
	// Prefix is a name prefix derived from ID.
	Prefix string
	// Labels holds RunLabel=ID.
	Labels map[string]string
}

// NewRun returns a fresh scope and registers a cleanup that removes every container and
// network labelled with it, whether the test passed or failed, and reports a cleanup that
// did not finish as a test error.
func NewRun(t testing.TB, cli client.APIClient) Run {
	t.Helper()
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatalf("random run id: %v", err)
	}
	id := hex.EncodeToString(b[:])
	r := Run{ID: id, Prefix: "cvgt-" + id, Labels: map[string]string{RunLabel: id}}
	t.Cleanup(func() {
		// t.Context is already cancelled when cleanups run.
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		if err := RemoveLabelled(ctx, cli, r.Labels); err != nil {
			t.Errorf("clean up docker objects of run %s: %v", id, err)
		}
	})
	return r
}

// RemoveLabelled force-removes every container (with its anonymous volumes), then every
// network and volume that carries all of labels. With no labels it refuses, rather than remove every
// object on the engine.
func RemoveLabelled(ctx context.Context, cli client.APIClient, labels map[string]string) error {
	if len(labels) == 0 {
		return errors.New("remove labelled: no labels given")
	}
	f := filters.NewArgs()
	for k, v := range labels {
		f.Add("label", k+"="+v)
	}
	var errs []error
	containers, err := cli.ContainerList(ctx, container.ListOptions{All: true, Filters: f})
	if err != nil {
		return fmt.Errorf("list containers: %w", err)
	}
	for _, c := range containers {
		if err := cli.ContainerRemove(ctx, c.ID, container.RemoveOptions{Force: true, RemoveVolumes: true}); err != nil && !client.IsErrNotFound(err) { //nolint:staticcheck // containerd/errdefs is not a direct requirement yet.
			errs = append(errs, fmt.Errorf("remove container %s: %w", c.ID[:12], err))
		}
	}
	networks, err := cli.NetworkList(ctx, network.ListOptions{Filters: f})
	if err != nil {
		return errors.Join(append(errs, fmt.Errorf("list networks: %w", err))...)
	}
	for _, n := range networks {
		if err := cli.NetworkRemove(ctx, n.ID); err != nil && !client.IsErrNotFound(err) { //nolint:staticcheck // see above.
			errs = append(errs, fmt.Errorf("remove network %s: %w", n.Name, err))
		}
	}
	volumes, err := cli.VolumeList(ctx, volume.ListOptions{Filters: f})
	if err != nil {
		return errors.Join(append(errs, fmt.Errorf("list volumes: %w", err))...)
	}
	for _, v := range volumes.Volumes {
		if err := cli.VolumeRemove(ctx, v.Name, true); err != nil && !client.IsErrNotFound(err) { //nolint:staticcheck // see above.
			errs = append(errs, fmt.Errorf("remove volume %s: %w", v.Name, err))
		}
	}
	return errors.Join(errs...)
}
