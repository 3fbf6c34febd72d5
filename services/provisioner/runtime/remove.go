package runtime

import (
	"context"
	"errors"
	"fmt"
	"math"
	"regexp"
	"strings"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/errdefs"
)

// Remove stops and removes the tenant's container, network and secrets volume; see [Runtime.Remove]. The
// container gets SIGTERM and grace to exit (rounded up to whole seconds; zero kills at once)
// before SIGKILL. Its last DockerConfig.ArchiveLogLines log lines are read after it stopped,
// so they include its shutdown; failing to read them is logged and does not stop the
// removal. Its secrets volume goes with it. A missing container or network counts as
// removed, so repeating the call is safe.
func (d *Docker) Remove(ctx context.Context, envID int64, grace time.Duration) (Removal, error) {
	log := d.log.With("envId", envID, "container", d.ContainerName(envID))
	var out Removal
	c, err := d.inspect(ctx, envID)
	switch {
	case err == nil:
		out.Existed = true
		out.ContainerID = c.ID
		if c.State.Running || c.State.Restarting || c.State.Paused {
			secs := int(math.Ceil(max(grace, 0).Seconds()))
			if err := d.cli.ContainerStop(ctx, c.ID, container.StopOptions{Timeout: &secs}); err != nil && !isNotFound(err) {
				return Removal{}, fmt.Errorf("stop container %s: %w", d.ContainerName(envID), err)
			}
		}
		if logs, err := d.tailLogs(ctx, c.ID, d.cfg.ArchiveLogLines); err != nil {
			log.Warn("read last logs before removal", "err", err)
		} else {
			out.LastLogs = logs
		}
		if stopped, err := d.cli.ContainerInspect(ctx, c.ID); err == nil && stopped.State != nil {
			out.ExitCode = stopped.State.ExitCode
		}
		if err := d.cli.ContainerRemove(ctx, c.ID, container.RemoveOptions{Force: true, RemoveVolumes: true}); err != nil && !isNotFound(err) {
			return Removal{}, fmt.Errorf("remove container %s: %w", d.ContainerName(envID), err)
		}
	case errors.Is(err, ErrNotFound):
	default:
		return Removal{}, err
	}

	if err := d.removeNetwork(ctx, envID); err != nil {
		return Removal{}, err
	}
	if err := d.removeVolume(ctx, envID); err != nil {
		return Removal{}, err
	}
	if out.Existed {
		log.Info("tenant container removed", "exitCode", out.ExitCode, "archivedLogBytes", len(out.LastLogs))
	}
	return out, nil
}

// removeVolume removes the tenant's secrets volume if it exists and is managed.
func (d *Docker) removeVolume(ctx context.Context, envID int64) error {
	name := d.VolumeName(envID)
	v, err := d.cli.VolumeInspect(ctx, name)
	if isNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("inspect volume %s: %w", name, err)
	}
	if !managedBy(v.Labels, d.cfg.Labels) {
		return fmt.Errorf("volume %s: %w", name, ErrNotManaged)
	}
	if err := d.cli.VolumeRemove(ctx, name, true); err != nil && !isNotFound(err) {
		return fmt.Errorf("remove volume %s: %w", name, err)
	}
	return nil
}

// removeNetwork removes the tenant's network if it exists and is managed.
func (d *Docker) removeNetwork(ctx context.Context, envID int64) error {
	name := d.NetworkName(envID)
	n, err := d.inspectNetwork(ctx, name)
	if isNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("inspect network %s: %w", name, err)
	}
	if !managedBy(n.Labels, d.cfg.Labels) {
		return fmt.Errorf("network %s: %w", name, ErrNotManaged)
	}
	if err := d.cli.NetworkRemove(ctx, n.ID); err != nil && !isNotFound(err) {
		return fmt.Errorf("remove network %s: %w", name, err)
	}
	return nil
}

// inspectNetwork returns the network named name, as NetworkInspect by name does, except when
// the engine holds several of that name (it allows it, and two installations racing, or
// older versions, could leave them): then this runtime's empty ones are removed, since a
// network with no container holds nothing, and the one left is returned. When more than one
// is still left (in use, or not this runtime's), the error says which.
func (d *Docker) inspectNetwork(ctx context.Context, name string) (network.Inspect, error) {
	list, err := d.cli.NetworkList(ctx, network.ListOptions{Filters: filters.NewArgs(filters.Arg("name", "^"+regexp.QuoteMeta(name)+"$"))})
	if err != nil {
		return network.Inspect{}, fmt.Errorf("list networks named %s: %w", name, err)
	}
	var left []network.Inspect
	for _, n := range list {
		if n.Name != name {
			continue
		}
		full, err := d.cli.NetworkInspect(ctx, n.ID, network.InspectOptions{})
		if isNotFound(err) {
			continue
		}
		if err != nil {
			return network.Inspect{}, fmt.Errorf("inspect network %s (%s): %w", name, n.ID[:12], err)
		}
		left = append(left, full)
	}
	if len(left) > 1 {
		kept := left[:0]
		for _, n := range left {
			if managedBy(n.Labels, d.cfg.Labels) && len(n.Containers) == 0 {
				if err := d.cli.NetworkRemove(ctx, n.ID); err != nil && !isNotFound(err) {
					return network.Inspect{}, fmt.Errorf("remove duplicate network %s (%s): %w", name, n.ID[:12], err)
				}
				d.duplicatesRemoved.Add(1)
				d.log.Warn("removed an empty duplicate of a tenant network", "network", name, "id", n.ID[:12])
				continue
			}
			kept = append(kept, n)
		}
		left = kept
	}
	switch len(left) {
	case 0:
		return network.Inspect{}, errdefs.NotFound(fmt.Errorf("no network named %s", name)) //nolint:staticcheck // see isNotFound.
	case 1:
		return left[0], nil
	}
	ids := make([]string, len(left))
	for i, n := range left {
		ids[i] = n.ID[:12]
	}
	return network.Inspect{}, fmt.Errorf("network name %s names %d networks in use or not this installation's (%s): remove the wrong ones with docker network rm", name, len(left), strings.Join(ids, ", "))
}
