// Package swarmtest is the test harness for code that drives Docker Swarm: it makes the engine
// a single-node swarm (advertised on 127.0.0.1) when it is in none, skipping the test only when
// the engine cannot make one, removes a test's services, secrets and networks, and leaves the
// swarm it made when the last test binary using it ends, so the engine is left as the tests
// found it.
package swarmtest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/swarm"
	"github.com/docker/docker/client"
)

// gwbridge is the bridge network an engine makes for its swarm's overlay networks; leaving the
// swarm leaves it behind.
const gwbridge = "docker_gwbridge"

// Files in os.TempDir that coordinate the test binaries `go test ./...` runs at once: every
// binary that uses the swarm holds lockFile shared until it ends, and markerFile says that a
// test binary made the swarm (its cluster id, and whether docker_gwbridge was there before).
// The last binary to end takes the lock exclusively and leaves a swarm the marker names.
const (
	lockFile   = "convergence-test-swarm.lock"
	markerFile = "convergence-test-swarm.made"
)

// EnvRun, set to 1, runs the tests that need a swarm; without it they skip.
const EnvRun = "CONVERGENCE_TEST_SWARM"

// testSwarm is this binary's use of the swarm.
var testSwarm struct {
	once sync.Once
	// lock is held shared from Require until Teardown; nil when this binary never used the
	// swarm.
	lock *os.File
	// skip says why the engine cannot make a swarm; empty when it can.
	skip string
	err  error
}

// Require makes sure the engine is a swarm manager, making a single-node swarm advertised on
// 127.0.0.1 when it is in none. It skips the test, saying why, only when the engine cannot
// make a swarm, and fails it when the engine is in a swarm it does not manage.
func Require(t testing.TB) {
	t.Helper()
	if os.Getenv(EnvRun) == "" {
		t.Skipf("swarm tests run only with %s=1: a swarm slows the engine for every other test, so make test runs them in a step of their own", EnvRun)
	}
	testSwarm.once.Do(func() { testSwarm.lock, testSwarm.skip, testSwarm.err = join() })
	if testSwarm.err != nil {
		t.Fatalf("swarm: %v", testSwarm.err)
	}
	if testSwarm.skip != "" {
		t.Skip(testSwarm.skip)
	}
}

// join takes the lock shared and, when the engine is in no swarm, exclusively while it makes
// one (writing the marker); it returns the lock held shared.
func join() (lock *os.File, skip string, err error) {
	lock, err = os.OpenFile(filepath.Join(os.TempDir(), lockFile), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, "", fmt.Errorf("open swarm lock: %w", err)
	}
	flock := func(how int) error {
		if err := syscall.Flock(int(lock.Fd()), how); err != nil {
			return fmt.Errorf("swarm lock: %w", err)
		}
		return nil
	}
	if err := flock(syscall.LOCK_SH); err != nil {
		_ = lock.Close()
		return nil, "", err
	}
	if skip, err = ensureSwarm(false); err == nil && skip == "" {
		return lock, "", nil
	}
	// No swarm: make one, alone. Another binary may have made it meanwhile; ensureSwarm
	// looks again.
	if err := flock(syscall.LOCK_EX); err != nil {
		_ = lock.Close()
		return nil, "", err
	}
	skip, err = ensureSwarm(true)
	if lerr := flock(syscall.LOCK_SH); lerr != nil && err == nil {
		err = lerr
	}
	return lock, skip, err
}

// ensureSwarm returns nil when the engine is a swarm manager. When it is in no swarm, it makes
// a single-node swarm and records it in the marker if mk is true (the caller holds the lock
// exclusively), and says so in skip otherwise.
func ensureSwarm(mk bool) (skip string, err error) {
	cli, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		return "", err
	}
	defer func() { _ = cli.Close() }()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	info, err := cli.Info(ctx)
	if err != nil {
		return "", fmt.Errorf("engine info: %w", err)
	}
	switch info.Swarm.LocalNodeState {
	case swarm.LocalNodeStateActive:
		if !info.Swarm.ControlAvailable {
			return "", errors.New("the engine is a swarm worker: swarm tests need a manager (or no swarm, which they make and remove)")
		}
		return "", nil
	case swarm.LocalNodeStateInactive:
		if !mk {
			return "no swarm yet", nil
		}
	default:
		return "", fmt.Errorf("the engine's swarm state is %q: wait for it to settle, or docker swarm leave --force", info.Swarm.LocalNodeState)
	}
	_, err = cli.NetworkInspect(ctx, gwbridge, network.InspectOptions{})
	gwbridgeBefore := err == nil
	_, err = cli.SwarmInit(ctx, swarm.InitRequest{
		ListenAddr:    "127.0.0.1:2377",
		AdvertiseAddr: "127.0.0.1",
		// Away from the default 10.0.0.0/8, which networks of the host may use.
		DefaultAddrPool: []string{"10.222.0.0/16"},
		SubnetSize:      24,
	})
	if err != nil {
		return fmt.Sprintf("this engine cannot make a swarm (docker swarm init --advertise-addr 127.0.0.1 fails: %v)", err), nil
	}
	sw, err := cli.SwarmInspect(ctx)
	if err != nil {
		return "", fmt.Errorf("inspect the new swarm: %w", err)
	}
	marker := sw.ID + " " + strconv.FormatBool(gwbridgeBefore)
	//nolint:gosec // A fixed name is the point: every test binary on the machine finds it.
	if err := os.WriteFile(filepath.Join(os.TempDir(), markerFile), []byte(marker), 0o600); err != nil {
		return "", fmt.Errorf("write swarm marker: %w", err)
	}
	return "", nil
}

// Teardown ends this binary's use of the swarm; call it from TestMain after m.Run. When no
// other test binary uses the swarm any more and a test binary made it, it leaves the swarm,
// with force, and removes the docker_gwbridge network it brought, so the engine is as the
// tests found it. The tests' own services, secrets and networks are gone by then
// (RemoveLabelled).
func Teardown() error {
	lock := testSwarm.lock
	if lock == nil {
		return nil
	}
	defer func() { _ = lock.Close() }() // Closing releases the lock.
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		return nil // Another binary still uses the swarm; the last one leaves it.
	}
	path := filepath.Join(os.TempDir(), markerFile)
	marker, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil // Not ours.
	}
	if err != nil {
		return fmt.Errorf("read swarm marker: %w", err)
	}
	id, before, _ := strings.Cut(string(marker), " ")
	cli, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		return err
	}
	defer func() { _ = cli.Close() }()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if sw, err := cli.SwarmInspect(ctx); err == nil && sw.ID == id {
		if err := cli.SwarmLeave(ctx, true); err != nil {
			return fmt.Errorf("leave the test swarm: %w", err)
		}
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("remove swarm marker: %w", err)
	}
	if before == "true" {
		return nil
	}
	// The engine removes the ingress sandbox's endpoint from docker_gwbridge just after it
	// answers; retry until it has.
	var rmErr error
	for range 50 {
		rmErr = cli.NetworkRemove(ctx, gwbridge)
		if rmErr == nil || client.IsErrNotFound(rmErr) { //nolint:staticcheck // containerd/errdefs is not a direct requirement yet.
			return nil
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("remove %s after leaving the test swarm: %w", gwbridge, rmErr)
}

// RemoveLabelled removes every service, secret and overlay network carrying labels, waiting for
// swarm to take the services' tasks off the networks, and reports what it could not remove as
// a test error. Register it after dockertest.NewRun, so that it runs before NewRun's cleanup.
func RemoveLabelled(t testing.TB, cli client.APIClient, labels map[string]string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	f := filters.NewArgs()
	for k, v := range labels {
		f.Add("label", k+"="+v)
	}
	var errs []error
	services, err := cli.ServiceList(ctx, swarm.ServiceListOptions{Filters: f})
	if err != nil {
		t.Errorf("list services: %v", err)
		return
	}
	for _, s := range services {
		if err := cli.ServiceRemove(ctx, s.ID); err != nil && !client.IsErrNotFound(err) { //nolint:staticcheck // see Teardown.
			errs = append(errs, fmt.Errorf("remove service %s: %w", s.Spec.Name, err))
		}
	}
	// Swarm removes the tasks' containers a moment later; until then they hold the networks.
	for range 150 {
		left, err := cli.ContainerList(ctx, container.ListOptions{All: true, Filters: f})
		if err != nil || len(left) == 0 {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	secrets, err := cli.SecretList(ctx, swarm.SecretListOptions{Filters: f})
	if err != nil {
		errs = append(errs, fmt.Errorf("list secrets: %w", err))
	}
	for _, s := range secrets {
		if err := cli.SecretRemove(ctx, s.ID); err != nil && !client.IsErrNotFound(err) { //nolint:staticcheck // see Teardown.
			errs = append(errs, fmt.Errorf("remove secret %s: %w", s.Spec.Name, err))
		}
	}
	networks, err := cli.NetworkList(ctx, network.ListOptions{Filters: f})
	if err != nil {
		errs = append(errs, fmt.Errorf("list networks: %w", err))
	}
	for _, n := range networks {
		var rmErr error
		for range 150 {
			rmErr = cli.NetworkRemove(ctx, n.ID)
			if rmErr == nil || client.IsErrNotFound(rmErr) || !strings.Contains(rmErr.Error(), "active endpoints") { //nolint:staticcheck // see Teardown.
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		// Swarm answers "not found" (not as a 404) for a network it has let go of while the
		// engine still lists its local copy.
		if rmErr != nil && !client.IsErrNotFound(rmErr) && !strings.Contains(rmErr.Error(), "not found") { //nolint:staticcheck // see Teardown.
			errs = append(errs, fmt.Errorf("remove network %s: %w", n.Name, rmErr))
		}
	}
	// The engine's own list drops a removed overlay network a moment later; wait, so that
	// the run's cleanup does not find it half gone.
	for range 150 {
		left, err := cli.NetworkList(ctx, network.ListOptions{Filters: f})
		if err != nil || len(left) == 0 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := errors.Join(errs...); err != nil {
		t.Errorf("clean up swarm objects: %v", err)
	}
}
