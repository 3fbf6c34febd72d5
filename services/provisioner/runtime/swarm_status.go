package runtime

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/swarm"
)

// Inspect reports the tenant's state from its service's current task: its state, node, exit
// and the restarts swarm made under the restart policy (the tasks that failed since the
// service last changed), and, when the task runs on the node the client talks to, its
// container's health and start. A tenant without a service has State [StateMissing] and no
// error.
func (s *Swarm) Inspect(ctx context.Context, envID int64) (Status, error) {
	svc, err := s.inspectService(ctx, envID)
	if errors.Is(err, ErrNotFound) {
		return Status{EnvID: envID, State: StateMissing, Health: HealthNone}, nil
	}
	if err != nil {
		return Status{}, err
	}
	tasks, err := s.tasks(ctx, svc.ID)
	if err != nil {
		return Status{}, fmt.Errorf("status of %s: %w", svc.Spec.Name, err)
	}
	failed := failedTasks(svc, tasks)
	st := Status{
		EnvID:         envID,
		State:         StateCreated,
		Health:        HealthNone,
		ContainerName: svc.Spec.Name,
		Image:         svc.Spec.Labels[LabelImage],
		HostPort:      publishedPortOf(svc),
		Generation:    labelInt(svc.Spec.Labels, LabelGeneration),
		SpecHash:      svc.Spec.Labels[LabelSpecHash],
		RestartCount:  len(failed),
	}
	if r := svc.Spec.TaskTemplate.Resources; r != nil && r.Limits != nil {
		st.CPULimit = float64(r.Limits.NanoCPUs) / 1e9
	}
	task, ok := currentTask(tasks)
	if !ok {
		return st, nil
	}
	st.State = taskState(task, len(failed) > 0)
	st.Error = task.Status.Err
	if cs := task.Status.ContainerStatus; cs != nil {
		st.ContainerID = cs.ContainerID
		st.ExitCode = cs.ExitCode
	}
	if st.State == StateRunning {
		st.StartedAt = task.Status.Timestamp
		if task.Status.State == swarm.TaskStateStarting {
			st.Health = HealthStarting
		}
	}
	if task.NodeID != "" {
		if node, _, err := s.cli.NodeInspectWithRaw(ctx, task.NodeID); err == nil {
			st.Node = node.Description.Hostname
		}
	}
	if st.ContainerID != "" {
		// The task's container is only known to its node's engine: where that is this one,
		// it tells health, the real start and an OOM kill.
		if c, err := s.cli.ContainerInspect(ctx, st.ContainerID); err == nil && c.State != nil {
			if c.State.Health != nil && c.State.Health.Status != "" {
				st.Health = Health(c.State.Health.Status)
			}
			if started := parseTime(c.State.StartedAt); !started.IsZero() {
				st.StartedAt = started
			}
			st.OOMKilled = c.State.OOMKilled
		}
	}
	if st.State == StateRunning && !st.StartedAt.IsZero() {
		st.Uptime = time.Since(st.StartedAt).Round(time.Second)
	}
	return st, nil
}

// taskState maps a task's state onto a container's: a task being scheduled or prepared is
// created, or restarting when an earlier one failed; a task starting (its container runs,
// its health check has not passed yet) is running; a failed one is exited, a rejected one dead.
func taskState(t swarm.Task, restarted bool) State {
	switch t.Status.State {
	case swarm.TaskStateStarting, swarm.TaskStateRunning:
		return StateRunning
	case swarm.TaskStateComplete, swarm.TaskStateShutdown, swarm.TaskStateFailed:
		return StateExited
	case swarm.TaskStateRejected, swarm.TaskStateOrphaned:
		return StateDead
	case swarm.TaskStateRemove:
		return StateRemoving
	}
	if restarted {
		return StateRestarting
	}
	return StateCreated
}

// Status is Inspect plus resource use, which the engine of the node running the task reports:
// where that is the engine the client talks to, it takes one stats sample of the task's
// container (about a second); elsewhere the usage fields stay zero.
func (s *Swarm) Status(ctx context.Context, envID int64) (Status, error) {
	st, err := s.Inspect(ctx, envID)
	if err != nil || st.State != StateRunning || st.ContainerID == "" {
		return st, err
	}
	err = s.docker.sampleUsage(ctx, &st)
	if isNotFound(err) {
		return st, nil // Another node's container.
	}
	if err != nil {
		return Status{}, fmt.Errorf("status of %s: %w", st.ContainerName, err)
	}
	return st, nil
}

// WaitHealthy blocks until GET /health on hostPort answers 200; see [Runtime.WaitHealthy]. The
// routing mesh forwards to a task only once its image's health check passes, so on swarm this
// waits for that too. Between failed probes it lists the service's tasks (at most every 200
// ms) and returns an [*ExitError] as soon as one has failed since the service last changed,
// with its exit code, the engine's error, and the first and last lines it wrote. It wraps
// [ErrNotFound] when the service disappears.
func (s *Swarm) WaitHealthy(ctx context.Context, envID int64, hostPort int) error {
	return s.docker.pollHealth(ctx, s.docker.healthURL(hostPort), func(ctx context.Context) error {
		svc, err := s.inspectService(ctx, envID)
		if err != nil {
			return err
		}
		tasks, err := s.tasks(ctx, svc.ID)
		if err != nil {
			return err
		}
		if failed := failedTasks(svc, tasks); len(failed) > 0 {
			return s.exitError(ctx, svc, failed)
		}
		return nil
	})
}

// Probe GETs /health on hostPort once; see [Docker.Probe].
func (s *Swarm) Probe(ctx context.Context, hostPort int) error { return s.docker.Probe(ctx, hostPort) }

// exitError describes the newest of the failed tasks, with the first and last lines it wrote.
// It reads the logs even when ctx is done, under its own short deadline.
func (s *Swarm) exitError(ctx context.Context, svc swarm.Service, failed []swarm.Task) error {
	t := failed[0]
	e := &ExitError{
		Container:    svc.Spec.Name,
		RestartCount: len(failed) - 1,
		EngineError:  t.Status.Err,
	}
	lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if cs := t.Status.ContainerStatus; cs != nil {
		e.ExitCode = cs.ExitCode
		if c, err := s.cli.ContainerInspect(lctx, cs.ContainerID); err == nil && c.State != nil {
			e.OOMKilled = c.State.OOMKilled
		}
	}
	e.LastLogs = lastLogs(s.taskLogs(lctx, t.ID, exitLogMaxLines))
	return e
}

// taskLogs reads the last n lines one task wrote, stdout and stderr merged.
func (s *Swarm) taskLogs(ctx context.Context, taskID string, n int) ([]byte, error) {
	body, err := s.cli.TaskLogs(ctx, taskID, container.LogsOptions{ShowStdout: true, ShowStderr: true, Tail: strconv.Itoa(n)})
	if err != nil {
		return nil, fmt.Errorf("logs of task %s: %w", taskID, err)
	}
	return readDemuxed(body)
}

// Logs returns the tenant's output as plain text; see [Runtime.Logs]. When the current task
// runs on the engine the client talks to, that is its container's output; otherwise it is the
// service's, every task's, which swarm reads from the engines of the nodes that ran them.
func (s *Swarm) Logs(ctx context.Context, envID int64, opts LogOptions) (io.ReadCloser, error) {
	svc, err := s.inspectService(ctx, envID)
	if err != nil {
		return nil, err
	}
	if id := s.localContainer(ctx, svc.ID); id != "" {
		body, err := s.cli.ContainerLogs(ctx, id, logsOptions(opts))
		if err != nil {
			return nil, fmt.Errorf("logs of %s: %w", svc.Spec.Name, err)
		}
		return newDemuxReader(body), nil
	}
	body, err := s.cli.ServiceLogs(ctx, svc.ID, logsOptions(opts))
	if err != nil {
		return nil, fmt.Errorf("logs of %s: %w", svc.Spec.Name, err)
	}
	return newDemuxReader(body), nil
}

// localContainer returns the id of the container of the service's current task when it runs
// on the engine the client talks to, and "" otherwise. Its logs are read from there: swarm's
// own service logs leave out a task until its health check has passed, and so miss how a
// tenant started and why it failed to.
func (s *Swarm) localContainer(ctx context.Context, serviceID string) string {
	tasks, err := s.tasks(ctx, serviceID)
	if err != nil {
		return ""
	}
	t, ok := currentTask(tasks)
	if !ok || t.Status.ContainerStatus == nil || t.Status.ContainerStatus.ContainerID == "" {
		return ""
	}
	c, err := s.cli.ContainerInspect(ctx, t.Status.ContainerStatus.ContainerID)
	if err != nil || c.Config == nil || c.Config.Tty {
		return ""
	}
	return c.ID
}

// logsOptions turns LogOptions into the engine's, stdout and stderr both.
func logsOptions(opts LogOptions) container.LogsOptions {
	o := container.LogsOptions{ShowStdout: true, ShowStderr: true, Follow: opts.Follow, Timestamps: opts.Timestamps, Tail: "all"}
	if opts.Tail > 0 {
		o.Tail = strconv.Itoa(opts.Tail)
	}
	if !opts.Since.IsZero() {
		o.Since = fmt.Sprintf("%d.%09d", opts.Since.Unix(), opts.Since.Nanosecond())
	}
	return o
}
