package runtime

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/docker/docker/api/types/container"
)

// Status reports the tenant's live state and resource use; a tenant without a container has
// State [StateMissing] and no error. For a running container it
// also takes one stats sample from the engine, which carries the previous sample as well, so
// CPU use is the delta over the engine's sampling interval. That makes the call take about a
// second.
func (d *Docker) Status(ctx context.Context, envID int64) (Status, error) {
	st, err := d.Inspect(ctx, envID)
	if err != nil || st.State != StateRunning {
		return st, err
	}
	if err := d.sampleUsage(ctx, &st); err != nil {
		return Status{}, fmt.Errorf("status of %s: %w", st.ContainerName, err)
	}
	return st, nil
}

// sampleUsage takes one stats sample of st's container and sets st's resource use from it.
func (d *Docker) sampleUsage(ctx context.Context, st *Status) error {
	stats, err := d.stats(ctx, st.ContainerID)
	if err != nil {
		return err
	}
	st.CPUPercent = cpuPercent(stats)
	st.MemoryBytes = memoryUsage(stats.MemoryStats)
	st.MemoryLimitBytes = stats.MemoryStats.Limit
	st.PIDs = stats.PidsStats.Current
	return nil
}

// Inspect is Status without the resource use, which takes a sample over about a second: it
// reports state, health, exit, restarts and uptime with one quick engine call.
func (d *Docker) Inspect(ctx context.Context, envID int64) (Status, error) {
	c, err := d.inspect(ctx, envID)
	if errors.Is(err, ErrNotFound) {
		return Status{EnvID: envID, State: StateMissing, Health: HealthNone}, nil
	}
	if err != nil {
		return Status{}, err
	}
	st := Status{
		EnvID:         envID,
		State:         State(c.State.Status),
		Health:        HealthNone,
		ContainerID:   c.ID,
		ContainerName: strings.TrimPrefix(c.Name, "/"),
		Image:         c.Config.Image,
		HostPort:      publishedPort(c),
		Generation:    labelInt(c.Config.Labels, LabelGeneration),
		SpecHash:      c.Config.Labels[LabelSpecHash],
		ExitCode:      c.State.ExitCode,
		OOMKilled:     c.State.OOMKilled,
		Error:         c.State.Error,
		RestartCount:  c.RestartCount,
		StartedAt:     parseTime(c.State.StartedAt),
		CPULimit:      float64(c.HostConfig.NanoCPUs) / 1e9,
	}
	if c.State.Health != nil && c.State.Health.Status != "" {
		st.Health = Health(c.State.Health.Status)
	}
	if c.State.Running && !st.StartedAt.IsZero() {
		st.Uptime = time.Since(st.StartedAt).Round(time.Second)
	}
	return st, nil
}

// stats takes one stats sample of a container, with the engine's previous sample.
func (d *Docker) stats(ctx context.Context, containerID string) (container.StatsResponse, error) {
	r, err := d.cli.ContainerStats(ctx, containerID, false)
	if err != nil {
		return container.StatsResponse{}, fmt.Errorf("stats: %w", err)
	}
	defer r.Body.Close()
	var s container.StatsResponse
	if err := json.NewDecoder(r.Body).Decode(&s); err != nil {
		return container.StatsResponse{}, fmt.Errorf("decode stats: %w", err)
	}
	return s, nil
}

// cpuPercent is the container's CPU use between the sample's previous and current reading,
// where 100 is one full core (as `docker stats` shows it). It is zero without a previous
// reading.
func cpuPercent(s container.StatsResponse) float64 {
	cur, pre := s.CPUStats, s.PreCPUStats
	if pre.SystemUsage == 0 || cur.SystemUsage <= pre.SystemUsage || cur.CPUUsage.TotalUsage < pre.CPUUsage.TotalUsage {
		return 0
	}
	cpus := float64(cur.OnlineCPUs)
	if cpus == 0 {
		cpus = float64(len(cur.CPUUsage.PercpuUsage))
	}
	if cpus == 0 {
		cpus = 1
	}
	used := float64(cur.CPUUsage.TotalUsage - pre.CPUUsage.TotalUsage)
	system := float64(cur.SystemUsage - pre.SystemUsage)
	return used / system * cpus * 100
}

// memoryUsage is memory in use minus inactive file pages, which the kernel reclaims before
// it would kill the container. cgroup v1 reports them as total_inactive_file, v2 as
// inactive_file.
func memoryUsage(m container.MemoryStats) uint64 {
	inactive, ok := m.Stats["total_inactive_file"]
	if !ok {
		inactive = m.Stats["inactive_file"]
	}
	if inactive > m.Usage {
		return m.Usage
	}
	return m.Usage - inactive
}
