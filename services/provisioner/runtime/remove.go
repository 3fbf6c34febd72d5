package runtime

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/network"
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
	n, err := d.cli.NetworkInspect(ctx, name, network.InspectOptions{})
	if isNotFound(err) || (err == nil && n.Name != name) {
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
