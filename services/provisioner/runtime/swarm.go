package runtime

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/swarm"
	"github.com/docker/docker/client"
)

// Labels only the Swarm runtime sets.
const (
	// LabelImage holds the image reference a tenant's service was made from; the service
	// itself names the image by id, so that no node ever tries to pull it.
	LabelImage = "convergence.image"
	// LabelSecretFile names the file a Swarm secret becomes in the tenant's SecretsDir.
	LabelSecretFile = "convergence.secret_file"
)

// swarmRestartDelay is how long swarm waits before it replaces a tenant's failed task: short,
// like the Docker engine's first restart, since a crash loop ends after RestartRetries anyway.
const swarmRestartDelay = time.Second

// swarmSettle bounds the waits for swarm to act on a change (tasks to stop, endpoints to leave
// a network) that it makes asynchronously.
const swarmSettle = 30 * time.Second

// Swarm runs each tenant as a Docker Swarm service of one replica, driven through the Docker
// SDK on a manager node of the swarm. A tenant has the same names and labels as on [Docker]:
// its service is named like the container, its own overlay network like the network (internal
// when its egress class is [egress.None]), and its [Spec.Secrets] are Swarm secrets mounted as
// files in [SecretsDir], never environment variables. Its port is published through the
// routing mesh, or on the node of its task ([SwarmConfig].PublishMode).
//
// Every method takes a ctx that bounds it and is safe for concurrent use on different
// tenants; for one tenant, the caller serializes Ensure, PutSecrets and Remove.
//
// What a service cannot express on the engine's API version, and so the runtime does not
// enforce, is listed in the README (Tenants on Docker Swarm): among it no-new-privileges before
// API 1.46, and a swap limit at all. Overlay networks take their subnets from the swarm's own
// address pool (docker swarm init --default-addr-pool), not [DockerConfig].SubnetPool.
type Swarm struct {
	cli   client.APIClient
	cfg   DockerConfig
	swarm SwarmConfig
	// docker shares the names, labels, health probes, stats and container events, which are
	// the same for a task's container as for a container of the Docker runtime.
	docker *Docker
	log    *slog.Logger
}

// NewSwarm returns a runtime on the swarm whose manager cli talks to, reading the shared
// settings from cfg and its own from sc. It starts nothing and makes no call to the engine;
// the engine must be a swarm manager by the first call. The caller owns cli and closes it after
// the last call on the runtime.
func NewSwarm(cli client.APIClient, cfg DockerConfig, sc SwarmConfig, log *slog.Logger) (*Swarm, error) {
	if err := sc.Validate(cfg); err != nil {
		return nil, fmt.Errorf("new swarm runtime: %w", err)
	}
	d, err := NewDocker(cli, cfg, log)
	if err != nil {
		return nil, fmt.Errorf("new swarm runtime: %w", err)
	}
	s := &Swarm{cli: cli, cfg: d.cfg, swarm: sc.withDefaults(), docker: d, log: log.With("component", "runtime", "runtime", "swarm")}
	d.log = s.log
	return s, nil
}

// ContainerName returns the deterministic name of the tenant's service, the same as its
// container's name on [Docker].
func (s *Swarm) ContainerName(envID int64) string { return s.docker.ContainerName(envID) }

// NetworkName returns the deterministic name of the tenant's overlay network.
func (s *Swarm) NetworkName(envID int64) string { return s.docker.NetworkName(envID) }

// secretPrefix starts the name of every Swarm secret of the tenant.
func (s *Swarm) secretPrefix(envID int64) string { return s.ContainerName(envID) + "-secret-" }

// secretName names the secret holding value as file, from a digest of both: a secret's data
// cannot change, so a new value is a new secret, and the same value keeps its secret.
func (s *Swarm) secretName(envID int64, file, value string) string {
	sum := sha256.Sum256([]byte(file + "\x00" + value))
	return s.secretPrefix(envID) + hex.EncodeToString(sum[:8])
}

// Owns reports whether o is named as tenant o.EnvID's service, network or one of its secrets.
func (s *Swarm) Owns(o Object) bool {
	if o.EnvID <= 0 {
		return false
	}
	return o.Name == s.ContainerName(o.EnvID) || o.Name == s.NetworkName(o.EnvID) ||
		(o.Kind == KindSecret && strings.HasPrefix(o.Name, s.secretPrefix(o.EnvID)))
}

// inspectService returns the tenant's service. It wraps [ErrNotFound] when there is none and
// [ErrNotManaged] when the name belongs to a service without this runtime's labels.
func (s *Swarm) inspectService(ctx context.Context, envID int64) (swarm.Service, error) {
	name := s.ContainerName(envID)
	svc, _, err := s.cli.ServiceInspectWithRaw(ctx, name, swarm.ServiceInspectOptions{})
	if err != nil {
		if isNotFound(err) {
			return swarm.Service{}, fmt.Errorf("service %s: %w", name, ErrNotFound)
		}
		return swarm.Service{}, fmt.Errorf("inspect service %s: %w", name, err)
	}
	// Inspect by name also matches a service whose id starts with the name; only the name
	// counts.
	if svc.Spec.Name != name {
		return swarm.Service{}, fmt.Errorf("service %s: %w", name, ErrNotFound)
	}
	if svc.Spec.TaskTemplate.ContainerSpec == nil || !managedBy(svc.Spec.Labels, s.cfg.Labels) {
		return swarm.Service{}, fmt.Errorf("service %s: %w", name, ErrNotManaged)
	}
	return svc, nil
}

// tasks returns the service's tasks, newest first.
func (s *Swarm) tasks(ctx context.Context, serviceID string) ([]swarm.Task, error) {
	tasks, err := s.cli.TaskList(ctx, swarm.TaskListOptions{Filters: filters.NewArgs(filters.Arg("service", serviceID))})
	if err != nil {
		return nil, fmt.Errorf("list tasks: %w", err)
	}
	tasks = slices.DeleteFunc(tasks, func(t swarm.Task) bool { return t.ServiceID != serviceID })
	slices.SortFunc(tasks, func(a, b swarm.Task) int {
		return cmp.Or(b.CreatedAt.Compare(a.CreatedAt), strings.Compare(b.ID, a.ID))
	})
	return tasks, nil
}

// currentTask returns the task that stands for the tenant now: the newest one swarm wants
// running, else the newest of all. ok is false when the service has no task.
func currentTask(tasks []swarm.Task) (t swarm.Task, ok bool) {
	for _, t := range tasks {
		if t.DesiredState == swarm.TaskStateRunning || t.DesiredState == swarm.TaskStateReady {
			return t, true
		}
	}
	if len(tasks) > 0 {
		return tasks[0], true
	}
	return swarm.Task{}, false
}

// failedTasks returns the tasks that failed, or were rejected, since the service's spec last
// changed, newest first: the crashes its restart policy answered.
func failedTasks(svc swarm.Service, tasks []swarm.Task) []swarm.Task {
	var out []swarm.Task
	for _, t := range tasks {
		if t.CreatedAt.Before(svc.UpdatedAt) {
			continue
		}
		if t.Status.State == swarm.TaskStateFailed || t.Status.State == swarm.TaskStateRejected {
			out = append(out, t)
		}
	}
	return out
}

// CheckManager returns nil when the engine the client talks to is a manager of a swarm, and
// otherwise an error saying how to make it one. The provisioner calls it at start.
func (s *Swarm) CheckManager(ctx context.Context) error {
	info, err := s.cli.Info(ctx)
	if err != nil {
		return fmt.Errorf("engine info: %w", err)
	}
	if info.Swarm.LocalNodeState != swarm.LocalNodeStateActive || !info.Swarm.ControlAvailable {
		return fmt.Errorf("the engine at %s is not a swarm manager (swarm state %q): run docker swarm init, or point the provisioner at a manager, or run it with provisioner.runtime=docker", s.cli.DaemonHost(), info.Swarm.LocalNodeState)
	}
	return nil
}

// publishedPortOf returns the port the service publishes, or zero.
func publishedPortOf(svc swarm.Service) int {
	if svc.Spec.EndpointSpec == nil {
		return 0
	}
	for _, p := range svc.Spec.EndpointSpec.Ports {
		if p.PublishedPort != 0 {
			return int(p.PublishedPort)
		}
	}
	return 0
}
