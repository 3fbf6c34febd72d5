package runtime

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/swarm"
	"github.com/docker/docker/pkg/stdcopy"
)

// Remove stops the tenant's service and removes it, its secrets and its network; see
// [Runtime.Remove]. With a positive grace, a task on the engine the client talks to is stopped
// like a container (SIGTERM, SIGKILL after grace) so its last log lines include its shutdown;
// a task on another node is stopped by scaling the service to zero, with the stop grace period
// the service was made with ([DockerConfig].ReplaceGrace; swarm has no per-call grace), after
// its logs were read. With zero grace the service is removed at once, which kills the task. A
// missing service, secret or network counts as removed, so repeating the call is safe.
func (s *Swarm) Remove(ctx context.Context, envID int64, grace time.Duration) (Removal, error) {
	name := s.ContainerName(envID)
	log := s.log.With("envId", envID, "service", name)
	var out Removal
	svc, err := s.inspectService(ctx, envID)
	switch {
	case err == nil:
		out.Existed = true
		out.ContainerID = svc.ID
		local := s.localContainer(ctx, svc.ID)
		if grace > 0 && local != "" {
			// Stopped like a container of the Docker runtime: a clean exit completes the
			// task, which its on-failure policy leaves alone, and the container keeps its
			// logs, shutdown included, until the service goes.
			secs := int(math.Ceil(grace.Seconds()))
			if err := s.cli.ContainerStop(ctx, local, container.StopOptions{Timeout: &secs}); err != nil && !isNotFound(err) {
				return Removal{}, fmt.Errorf("stop the task of service %s: %w", name, err)
			}
		}
		if logs, err := s.tailServiceLogs(ctx, svc.ID, s.cfg.ArchiveLogLines); err != nil {
			log.Warn("read last logs before removal", "err", err)
		} else {
			out.LastLogs = logs
		}
		if grace > 0 && local == "" {
			// On another node: swarm stops the task with the service's own grace period.
			// Its logs were read before, since scaling down removes the container.
			if err := s.scaleToZero(ctx, svc); err != nil {
				return Removal{}, err
			}
		}
		if local != "" {
			if c, err := s.cli.ContainerInspect(ctx, local); err == nil && c.State != nil {
				out.ExitCode = c.State.ExitCode
			}
		} else if tasks, err := s.tasks(ctx, svc.ID); err == nil {
			if t, ok := currentTask(tasks); ok && t.Status.ContainerStatus != nil {
				out.ExitCode = t.Status.ContainerStatus.ExitCode
			}
		}
		if err := s.removeService(ctx, svc.ID); err != nil {
			return Removal{}, fmt.Errorf("remove service %s: %w", name, err)
		}
	case errors.Is(err, ErrNotFound):
	default:
		return Removal{}, err
	}
	if err := s.removeSecrets(ctx, envID); err != nil {
		return Removal{}, err
	}
	if err := s.removeNetwork(ctx, envID); err != nil {
		return Removal{}, err
	}
	if out.Existed {
		log.Info("tenant service removed", "exitCode", out.ExitCode, "archivedLogBytes", len(out.LastLogs))
	}
	return out, nil
}

// removeService removes a service and waits until swarm has deleted its tasks, for up to
// swarmSettle; a missing service counts as removed. Until then a task that swarm was still
// starting can attach the node to the tenant's network again, and bring the network back
// after its removal.
func (s *Swarm) removeService(ctx context.Context, id string) error {
	if err := s.cli.ServiceRemove(ctx, id); err != nil && !isNotFound(err) {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, swarmSettle)
	defer cancel()
	for delay := 20 * time.Millisecond; ; delay = min(delay*2, 250*time.Millisecond) {
		// The engine refuses a service filter naming a service it no longer has, so the
		// tasks are picked out of all of them; this runs only while a tenant is removed.
		all, err := s.cli.TaskList(ctx, swarm.TaskListOptions{})
		if err != nil && ctx.Err() == nil {
			return fmt.Errorf("list tasks: %w", err)
		}
		left := 0
		for _, t := range all {
			if t.ServiceID == id {
				left++
			}
		}
		if left == 0 && err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			// A task on a node that is down stays until the node is back; the service is
			// gone, and the network's removal says whether anything still holds it.
			s.log.Warn("a removed tenant service's tasks are not all gone; going on", "serviceId", id, "tasks", left)
			return nil
		case <-time.After(delay):
		}
	}
}

// scaleToZero sets the service's replicas to zero and waits until no task of it runs, bounded
// by its stop grace period and swarmSettle.
func (s *Swarm) scaleToZero(ctx context.Context, svc swarm.Service) error {
	spec := svc.Spec
	zero := uint64(0)
	spec.Mode.Replicated = &swarm.ReplicatedService{Replicas: &zero}
	if _, err := s.cli.ServiceUpdate(ctx, svc.ID, svc.Version, spec, swarm.ServiceUpdateOptions{}); err != nil {
		if isNotFound(err) {
			return nil
		}
		return fmt.Errorf("stop service %s: %w", svc.Spec.Name, err)
	}
	bound := swarmSettle
	if g := spec.TaskTemplate.ContainerSpec.StopGracePeriod; g != nil {
		bound += *g
	}
	wctx, cancel := context.WithTimeout(ctx, bound)
	defer cancel()
	for delay := 50 * time.Millisecond; ; delay = min(delay*2, 500*time.Millisecond) {
		tasks, err := s.tasks(wctx, svc.ID)
		if err != nil {
			return err
		}
		if !slices.ContainsFunc(tasks, func(t swarm.Task) bool { return !isTerminal(t.Status.State) && t.Status.State != swarm.TaskStateNew }) {
			return nil
		}
		select {
		case <-wctx.Done():
			s.log.Warn("a tenant task did not stop in time; removing its service anyway", "service", svc.Spec.Name)
			return ctx.Err()
		case <-time.After(delay):
		}
	}
}

// tailServiceLogs returns the last n lines of the tenant's output, stdout and stderr merged:
// its current task's container's when that is on this engine (see localContainer), else the
// service's.
func (s *Swarm) tailServiceLogs(ctx context.Context, serviceID string, n int) ([]byte, error) {
	if n <= 0 {
		return nil, nil
	}
	if id := s.localContainer(ctx, serviceID); id != "" {
		return s.docker.tailLogs(ctx, id, n)
	}
	body, err := s.cli.ServiceLogs(ctx, serviceID, logsOptions(LogOptions{Tail: n}))
	if err != nil {
		return nil, fmt.Errorf("logs of service %s: %w", serviceID, err)
	}
	return readDemuxed(body)
}

// readDemuxed reads a multiplexed log stream to its end and closes it.
func readDemuxed(body io.ReadCloser) ([]byte, error) {
	defer body.Close()
	var buf bytes.Buffer
	if _, err := stdcopy.StdCopy(&buf, &buf, body); err != nil {
		return buf.Bytes(), fmt.Errorf("read logs: %w", err)
	}
	return buf.Bytes(), nil
}

// removeSecrets removes the tenant's managed secrets.
func (s *Swarm) removeSecrets(ctx context.Context, envID int64) error {
	f := s.docker.labelFilters()
	f.Add("label", LabelEnvID+"="+strconv.FormatInt(envID, 10))
	secrets, err := s.cli.SecretList(ctx, swarm.SecretListOptions{Filters: f})
	if err != nil {
		return fmt.Errorf("list secrets: %w", err)
	}
	for _, sec := range secrets {
		o := object(KindSecret, sec.ID, sec.Spec.Name, sec.Spec.Labels, sec.CreatedAt, "")
		if o.EnvID != envID || !managedBy(sec.Spec.Labels, s.cfg.Labels) || !s.Owns(o) {
			continue
		}
		if err := s.cli.SecretRemove(ctx, sec.ID); err != nil && !isNotFound(err) {
			return fmt.Errorf("remove secret %s: %w", sec.Spec.Name, err)
		}
	}
	return nil
}

// removeNetwork removes the tenant's network if it exists and is managed, once the endpoints
// of its tasks have left it.
func (s *Swarm) removeNetwork(ctx context.Context, envID int64) error {
	name := s.NetworkName(envID)
	n, err := s.inspectNetwork(ctx, name)
	if isNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("inspect network %s: %w", name, err)
	}
	if !managedBy(n.Labels, s.cfg.Labels) {
		return fmt.Errorf("network %s: %w", name, ErrNotManaged)
	}
	if err := s.removeNetworkWhenFree(ctx, n.ID); err != nil {
		return fmt.Errorf("remove network %s: %w", name, err)
	}
	return nil
}

// List returns every service, network and secret carrying this runtime's labels, services
// first, each group ordered by env id; for the reconciler. The services' tasks and their
// containers belong to swarm, which removes them with their service.
func (s *Swarm) List(ctx context.Context) ([]Object, error) {
	f := s.docker.labelFilters()
	services, err := s.cli.ServiceList(ctx, swarm.ServiceListOptions{Filters: f})
	if err != nil {
		return nil, fmt.Errorf("list services: %w", err)
	}
	networks, err := s.cli.NetworkList(ctx, network.ListOptions{Filters: f})
	if err != nil {
		return nil, fmt.Errorf("list networks: %w", err)
	}
	secrets, err := s.cli.SecretList(ctx, swarm.SecretListOptions{Filters: f})
	if err != nil {
		return nil, fmt.Errorf("list secrets: %w", err)
	}
	out := make([]Object, 0, len(services)+len(networks)+len(secrets))
	for _, svc := range services {
		out = append(out, object(KindService, svc.ID, svc.Spec.Name, svc.Spec.Labels, svc.CreatedAt, ""))
	}
	for _, n := range networks {
		out = append(out, object(KindNetwork, n.ID, n.Name, n.Labels, n.Created, ""))
	}
	for _, sec := range secrets {
		out = append(out, object(KindSecret, sec.ID, sec.Spec.Name, sec.Spec.Labels, sec.CreatedAt, ""))
	}
	out = slices.DeleteFunc(out, func(o Object) bool { return !managedBy(o.Labels, s.cfg.Labels) })
	kindOrder := map[ObjectKind]int{KindService: 0, KindNetwork: 1, KindSecret: 2}
	slices.SortStableFunc(out, func(a, b Object) int {
		return cmp.Or(cmp.Compare(kindOrder[a.Kind], kindOrder[b.Kind]), cmp.Compare(a.EnvID, b.EnvID), cmp.Compare(a.Name, b.Name))
	})
	return out, nil
}

// Events streams lifecycle events of the containers of the tenants' tasks on the node the
// client talks to; see [Docker.Events]. A task's container carries the tenant's labels, and
// its events name the tenant's service as ContainerName. Tasks on other nodes are seen through
// the reconciler and the health watcher's periodic checks instead.
func (s *Swarm) Events(ctx context.Context) (<-chan Event, <-chan error) {
	return s.docker.Events(ctx)
}
