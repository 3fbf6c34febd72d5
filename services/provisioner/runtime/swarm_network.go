package runtime

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/errdefs"

	"github.com/convergence-dev/convergence/services/provisioner/egress"
)

// ensureNetwork returns the tenant's overlay network, creating it unless a managed one with
// the same spec hash already exists. It is internal when the tenant's egress class is none and
// ports go through the routing mesh. It reports whether this call created it.
func (s *Swarm) ensureNetwork(ctx context.Context, spec Spec, hash string) (id string, created bool, err error) {
	name := s.NetworkName(spec.EnvID)
	existing, err := s.inspectNetwork(ctx, name)
	switch {
	case err == nil:
		if !managedBy(existing.Labels, s.cfg.Labels) {
			return "", false, fmt.Errorf("network %s: %w", name, ErrNotManaged)
		}
		if existing.Labels[LabelSpecHash] == hash {
			return existing.ID, false, nil
		}
		if err := s.removeNetworkWhenFree(ctx, existing.ID); err != nil {
			return "", false, fmt.Errorf("remove stale network %s: %w", name, err)
		}
	case isNotFound(err):
	default:
		return "", false, fmt.Errorf("inspect network %s: %w", name, err)
	}
	opts := network.CreateOptions{
		Driver: "overlay",
		Scope:  "swarm",
		// An internal network gives its tasks no docker_gwbridge endpoint of its own, which
		// in host mode is where the engine publishes the port: only the routing mesh, whose
		// ingress network is a second one, can reach a task on an internal network.
		Internal: spec.Egress == egress.None && s.swarm.PublishMode == PublishIngress,
		Labels:   specLabels(spec, hash, s.cfg.Labels),
	}
	if s.cfg.NetworkMTU > 0 {
		opts.Options = map[string]string{"com.docker.network.driver.mtu": strconv.Itoa(s.cfg.NetworkMTU)}
	}
	resp, err := s.cli.NetworkCreate(ctx, name, opts)
	if err != nil {
		if isConflict(err) {
			if n, ierr := s.inspectNetwork(ctx, name); ierr == nil && managedBy(n.Labels, s.cfg.Labels) {
				return n.ID, false, nil
			}
		}
		if isPoolExhausted(err) || strings.Contains(err.Error(), "could not find an available") {
			return "", false, fmt.Errorf("create network %s: %w (the swarm's default address pool is used up): %w", name, ErrNoSubnet, err)
		}
		return "", false, fmt.Errorf("create network %s: %w", name, err)
	}
	if resp.Warning != "" {
		s.log.Warn("engine warning on network create", "network", name, "warning", resp.Warning)
	}
	return resp.ID, true, nil
}

// inspectNetwork returns the swarm network named name. Unlike bridge networks, swarm keeps
// network names unique, and the engine's list leaves out overlay networks no task of this node
// uses, so the network is inspected by name.
func (s *Swarm) inspectNetwork(ctx context.Context, name string) (network.Inspect, error) {
	n, err := s.cli.NetworkInspect(ctx, name, network.InspectOptions{Scope: "swarm"})
	if err != nil {
		return network.Inspect{}, err
	}
	if n.Name != name {
		// Inspect by name also matches a network whose id starts with the name.
		return network.Inspect{}, errdefs.NotFound(fmt.Errorf("no network named %s", name)) //nolint:staticcheck // see isNotFound.
	}
	return n, nil
}

// removeNetworkWhenFree removes a network once swarm has taken the endpoints of the tenant's
// stopped tasks out of it, which it does asynchronously; a missing network counts as removed.
func (s *Swarm) removeNetworkWhenFree(ctx context.Context, id string) error {
	ctx, cancel := context.WithTimeout(ctx, swarmSettle)
	defer cancel()
	for delay := 50 * time.Millisecond; ; delay = min(delay*2, time.Second) {
		err := s.cli.NetworkRemove(ctx, id)
		if err == nil || isNotFound(err) || strings.Contains(err.Error(), "not found") {
			// Swarm deletes the network asynchronously: the engine keeps its local copy,
			// and the name, for a moment after the manager let go of it.
			return s.waitNetworkGone(ctx, id)
		}
		if !strings.Contains(err.Error(), "active endpoints") && !strings.Contains(err.Error(), "in use") {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("network still in use after %s: %w", swarmSettle, err)
		case <-time.After(delay):
		}
	}
}

// waitNetworkGone waits until the engine no longer lists network id.
func (s *Swarm) waitNetworkGone(ctx context.Context, id string) error {
	for delay := 20 * time.Millisecond; ; delay = min(delay*2, 250*time.Millisecond) {
		left, err := s.cli.NetworkList(ctx, network.ListOptions{Filters: filters.NewArgs(filters.Arg("id", id))})
		if err != nil {
			return fmt.Errorf("list networks: %w", err)
		}
		if !slices.ContainsFunc(left, func(n network.Summary) bool { return n.ID == id }) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("network %s still there after its removal: %w", id, context.Cause(ctx))
		case <-time.After(delay):
		}
	}
}
