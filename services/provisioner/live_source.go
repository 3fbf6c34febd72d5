package provisioner

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/convergence-dev/convergence/internal/live"
	"github.com/convergence-dev/convergence/services/provisioner/runtime"
)

// liveSource serves the engine's view of tenants' containers to the live server.
type liveSource struct {
	rt runtime.Runtime
}

func (l liveSource) Status(ctx context.Context, envID int64) (live.Status, error) {
	st, err := l.rt.Status(ctx, envID)
	if err != nil {
		return live.Status{}, err
	}
	return live.Status{
		State:            string(st.State),
		Health:           string(st.Health),
		ContainerID:      st.ContainerID,
		ContainerName:    st.ContainerName,
		Image:            st.Image,
		HostPort:         st.HostPort,
		Generation:       st.Generation,
		RestartCount:     st.RestartCount,
		StartedAt:        st.StartedAt,
		UptimeSeconds:    int64(st.Uptime / time.Second),
		CPUPercent:       st.CPUPercent,
		CPULimit:         st.CPULimit,
		MemoryBytes:      st.MemoryBytes,
		MemoryLimitBytes: st.MemoryLimitBytes,
		PIDs:             st.PIDs,
		ExitCode:         st.ExitCode,
		OOMKilled:        st.OOMKilled,
		Error:            st.Error,
	}, nil
}

func (l liveSource) Logs(ctx context.Context, envID int64, req live.LogsRequest) (io.ReadCloser, error) {
	rc, err := l.rt.Logs(ctx, envID, runtime.LogOptions{Tail: req.Tail, Since: req.Since, Follow: req.Follow, Timestamps: req.Timestamps})
	if errors.Is(err, runtime.ErrNotFound) {
		return nil, fmt.Errorf("%w: %w", live.ErrNotFound, err)
	}
	return rc, err
}
