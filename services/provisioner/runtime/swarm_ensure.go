package runtime

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/docker/docker/api/types/mount"
	"github.com/docker/docker/api/types/swarm"
)

// tmpfsMode makes /tmp writable by the tenant's user, as the engine's default tmpfs is.
const tmpfsMode = os.FileMode(0o1777)

// Ensure makes the tenant's overlay network, secrets and service exist, match spec, and run
// one task; see [Runtime.Ensure]. A service of the same spec hash is adopted (and given a new
// task when it has none that runs), one of another hash is replaced. The image must be on the
// engine; the service names it by id, which no node ever pulls. Ensure returns once the
// service exists (in host mode, once its task's container has started, so that a port held by
// something else is [ErrPortUnavailable] as on Docker): swarm runs the task asynchronously,
// and [Swarm.WaitHealthy] reports how that went. It inspects the service swarm stored and
// refuses one whose hardening swarm dropped, except what the README lists as Swarm's known
// differences.
func (s *Swarm) Ensure(ctx context.Context, spec Spec) (Instance, error) {
	spec = spec.WithDefaults()
	if err := spec.Validate(); err != nil {
		return Instance{}, err
	}
	hash := spec.SpecHash()
	existing, err := s.inspectService(ctx, spec.EnvID)
	switch {
	case err == nil && existing.Spec.Labels[LabelSpecHash] == hash:
		return s.adopt(ctx, existing)
	case err == nil:
		s.log.Info("replacing tenant service with a changed spec", "envId", spec.EnvID,
			"oldSpecHash", existing.Spec.Labels[LabelSpecHash], "specHash", hash)
		if _, err := s.Remove(ctx, spec.EnvID, s.cfg.ReplaceGrace); err != nil {
			return Instance{}, fmt.Errorf("replace service: %w", err)
		}
	case errors.Is(err, ErrNotFound):
	default:
		return Instance{}, err
	}
	return s.create(ctx, spec, hash)
}

// adopt gives an existing service of the wanted spec a task when none runs (its task exited
// cleanly, which its on-failure policy does not restart, or it was scaled to zero), and
// describes it.
func (s *Swarm) adopt(ctx context.Context, svc swarm.Service) (Instance, error) {
	tasks, err := s.tasks(ctx, svc.ID)
	if err != nil {
		return Instance{}, err
	}
	live := slices.ContainsFunc(tasks, func(t swarm.Task) bool {
		return t.DesiredState == swarm.TaskStateRunning && !isTerminal(t.Status.State)
	})
	replicas := svc.Spec.Mode.Replicated
	if !live || replicas == nil || replicas.Replicas == nil || *replicas.Replicas != 1 {
		spec := svc.Spec
		one := uint64(1)
		spec.Mode.Replicated = &swarm.ReplicatedService{Replicas: &one}
		spec.TaskTemplate.ForceUpdate++
		if _, err := s.cli.ServiceUpdate(ctx, svc.ID, svc.Version, spec, swarm.ServiceUpdateOptions{}); err != nil {
			return Instance{}, fmt.Errorf("start existing service %s: %w", svc.Spec.Name, err)
		}
	}
	inst := Instance{
		EnvID:         labelInt(svc.Spec.Labels, LabelEnvID),
		ContainerID:   svc.ID,
		ContainerName: svc.Spec.Name,
		NetworkName:   s.NetworkName(labelInt(svc.Spec.Labels, LabelEnvID)),
		HostPort:      publishedPortOf(svc),
		SpecHash:      svc.Spec.Labels[LabelSpecHash],
	}
	for _, n := range svc.Spec.TaskTemplate.Networks {
		inst.NetworkID = n.Target
	}
	return inst, nil
}

// isTerminal reports whether a task in state st will never run again.
func isTerminal(st swarm.TaskState) bool {
	switch st {
	case swarm.TaskStateComplete, swarm.TaskStateShutdown, swarm.TaskStateFailed,
		swarm.TaskStateRejected, swarm.TaskStateRemove, swarm.TaskStateOrphaned:
		return true
	}
	return false
}

// CheckImage returns nil when ref is on the engine, an error wrapping ErrImageNotFound (saying
// how to get it) when it is not, or the engine's error. Only the manager's engine is asked:
// on a swarm of several nodes, every node that may run tenants needs the image too.
func (s *Swarm) CheckImage(ctx context.Context, ref string) error {
	_, err := s.imageID(ctx, ref)
	return err
}

// imageID returns the id of the local image ref, which a service names so that no node pulls
// it (swarm tries to pull every image named by reference before each task).
func (s *Swarm) imageID(ctx context.Context, ref string) (string, error) {
	img, err := s.cli.ImageInspect(ctx, ref)
	if err != nil {
		if isNotFound(err) {
			return "", fmt.Errorf("%w: %q is not on the Docker host (images are never pulled: build or load it first, on every swarm node that may run tenants; make images builds the templates')", ErrImageNotFound, ref)
		}
		return "", fmt.Errorf("inspect image %s: %w", ref, err)
	}
	return img.ID, nil
}

// create makes the network, secrets and service of a tenant that has no service. It undoes
// its own work on failure.
func (s *Swarm) create(ctx context.Context, spec Spec, hash string) (_ Instance, err error) {
	name := s.ContainerName(spec.EnvID)
	log := s.log.With("envId", spec.EnvID, "service", name)
	image, err := s.imageID(ctx, spec.Image)
	if err != nil {
		return Instance{}, err
	}
	// As in Docker.create: the calls that create objects run to their end even when ctx is
	// done, and a cancelled Ensure removes what it made like any failed one.
	engine, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	netID, netCreated, err := s.ensureNetwork(engine, spec, hash)
	if err != nil {
		return Instance{}, err
	}
	var serviceID string
	var secretIDs []string
	defer func() {
		if err == nil {
			return
		}
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
		defer cancel()
		if serviceID != "" {
			if rerr := s.removeService(cctx, serviceID); rerr != nil {
				log.Error("remove service after failed ensure", "err", rerr)
			}
		}
		for _, id := range secretIDs {
			if rerr := s.cli.SecretRemove(cctx, id); rerr != nil && !isNotFound(rerr) {
				log.Error("remove secret after failed ensure", "err", rerr)
			}
		}
		if netCreated {
			if rerr := s.removeNetworkWhenFree(cctx, netID); rerr != nil {
				log.Error("remove network after failed ensure", "err", rerr)
			}
		}
	}()

	labels := specLabels(spec, hash, s.cfg.Labels)
	refs, created, err := s.ensureSecrets(engine, spec.EnvID, labels, nil, spec.Secrets)
	secretIDs = created
	if err != nil {
		return Instance{}, err
	}
	if ctx.Err() != nil {
		return Instance{}, fmt.Errorf("ensure %s: %w", name, context.Cause(ctx))
	}
	want := s.serviceSpec(spec, hash, image, netID, refs)
	resp, err := s.cli.ServiceCreate(engine, want, swarm.ServiceCreateOptions{})
	if err != nil {
		switch {
		case isPortInUse(err) || strings.Contains(err.Error(), "already in use"):
			// Another service publishes the port.
			return Instance{}, fmt.Errorf("create service %s: %w: %d: %w", name, ErrPortUnavailable, spec.HostPort, err)
		case isConflict(err) || strings.Contains(err.Error(), "already exists"):
			// A concurrent Ensure of this tenant won the race; adopt its service if it has
			// the same spec. Its network and secrets are in use now.
			netCreated, secretIDs = false, nil
			if svc, ierr := s.inspectService(ctx, spec.EnvID); ierr == nil && svc.Spec.Labels[LabelSpecHash] == hash {
				return s.adopt(ctx, svc)
			}
		}
		return Instance{}, fmt.Errorf("create service %s: %w", name, err)
	}
	serviceID = resp.ID
	for _, w := range resp.Warnings {
		log.Warn("engine warning on service create", "warning", w)
	}
	if ctx.Err() != nil {
		return Instance{}, fmt.Errorf("ensure %s: %w", name, context.Cause(ctx))
	}
	got, _, err := s.cli.ServiceInspectWithRaw(ctx, serviceID, swarm.ServiceInspectOptions{})
	if err != nil {
		return Instance{}, fmt.Errorf("inspect new service %s: %w", name, err)
	}
	if problems := verifyServiceHardening(want, got.Spec); len(problems) > 0 {
		return Instance{}, fmt.Errorf("service %s: %w: %s", name, ErrHardeningNotApplied, strings.Join(problems, "; "))
	}
	if s.swarm.PublishMode == PublishHost {
		if err := s.waitPortBound(ctx, serviceID); err != nil {
			return Instance{}, fmt.Errorf("service %s: %w", name, err)
		}
	}
	log.Info("tenant service created", "serviceId", serviceID[:12], "hostPort", spec.HostPort, "image", spec.Image, "specHash", hash)
	return Instance{
		EnvID:         spec.EnvID,
		ContainerID:   serviceID,
		ContainerName: name,
		NetworkID:     netID,
		NetworkName:   s.NetworkName(spec.EnvID),
		HostPort:      spec.HostPort,
		SpecHash:      hash,
		Created:       true,
	}, nil
}

// waitPortBound waits until the service's first task's container has started, which in host
// mode means its node's engine bound the published port, and wraps [ErrPortUnavailable] when
// the task failed because something else holds that port. Any other failure is left to
// WaitHealthy.
func (s *Swarm) waitPortBound(ctx context.Context, serviceID string) error {
	ctx, cancel := context.WithTimeout(ctx, swarmSettle)
	defer cancel()
	for delay := 20 * time.Millisecond; ; delay = min(delay*2, 250*time.Millisecond) {
		tasks, err := s.tasks(ctx, serviceID)
		if err != nil {
			return err
		}
		for _, t := range tasks {
			switch t.Status.State {
			case swarm.TaskStateRunning, swarm.TaskStateComplete:
				return nil
			case swarm.TaskStateStarting:
				// Starting covers the container's start, ports included, and then the wait
				// for its health check; a running container is past the ports.
				if s.containerStarted(ctx, t) {
					return nil
				}
			case swarm.TaskStateFailed, swarm.TaskStateRejected:
				if isPortInUse(errors.New(t.Status.Err)) {
					return fmt.Errorf("%w: %s", ErrPortUnavailable, t.Status.Err)
				}
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for the task to start: %w", context.Cause(ctx))
		case <-time.After(delay):
		}
	}
}

// containerStarted reports whether the task's container has started, or runs on a node whose
// engine this one cannot ask.
func (s *Swarm) containerStarted(ctx context.Context, t swarm.Task) bool {
	cs := t.Status.ContainerStatus
	if cs == nil || cs.ContainerID == "" {
		return false
	}
	c, err := s.cli.ContainerInspect(ctx, cs.ContainerID)
	if isNotFound(err) {
		return true
	}
	return err == nil && c.State != nil && (c.State.Running || parseTime(c.State.StartedAt).After(time.Time{}))
}

// serviceSpec builds the hardened service for spec (defaults applied) on network netID, naming
// the image by its id. Nothing of the host is mounted: only a tmpfs /tmp, and the secrets
// swarm mounts itself.
func (s *Swarm) serviceSpec(spec Spec, hash, imageID, netID string, secrets []*swarm.SecretReference) swarm.ServiceSpec {
	labels := specLabels(spec, hash, s.cfg.Labels)
	serviceLabels := maps.Clone(labels)
	serviceLabels[LabelImage] = spec.Image
	one := uint64(1)
	retries := uint64(s.cfg.RestartRetries)
	delay := swarmRestartDelay
	grace := s.cfg.ReplaceGrace
	hosts := make([]string, 0, len(s.cfg.ExtraHosts))
	for _, h := range s.cfg.ExtraHosts {
		// Swarm takes hosts(5) lines, "ip name", where the engine takes "name:ip".
		name, ip, _ := strings.Cut(h, ":")
		hosts = append(hosts, ip+" "+name)
	}
	mode := swarm.PortConfigPublishModeIngress
	order := swarm.UpdateOrderStartFirst
	if s.swarm.PublishMode == PublishHost {
		// A port published on the host cannot be held by two tasks at once.
		mode, order = swarm.PortConfigPublishModeHost, swarm.UpdateOrderStopFirst
	}
	return swarm.ServiceSpec{
		Annotations: swarm.Annotations{Name: s.ContainerName(spec.EnvID), Labels: serviceLabels},
		TaskTemplate: swarm.TaskSpec{
			ContainerSpec: &swarm.ContainerSpec{
				Image:          imageID,
				Labels:         labels,
				Env:            spec.env(),
				User:           s.cfg.User,
				ReadOnly:       true,
				CapabilityDrop: []string{capDropAll},
				Privileges:     &swarm.Privileges{NoNewPrivileges: true},
				Mounts: []mount.Mount{{Type: mount.TypeTmpfs, Target: tmpDir,
					TmpfsOptions: &mount.TmpfsOptions{SizeBytes: s.cfg.TmpfsBytes, Mode: tmpfsMode}}},
				Hosts:           hosts,
				Secrets:         secrets,
				StopGracePeriod: &grace,
			},
			Resources: &swarm.ResourceRequirements{Limits: &swarm.Limit{
				NanoCPUs:    spec.Limits.NanoCPUs,
				MemoryBytes: spec.Limits.MemoryBytes,
				Pids:        spec.Limits.PIDs,
			}},
			RestartPolicy: &swarm.RestartPolicy{Condition: swarm.RestartPolicyConditionOnFailure, MaxAttempts: &retries, Delay: &delay},
			LogDriver: &swarm.Driver{Name: logDriver, Options: map[string]string{
				"max-size": s.cfg.LogMaxSize,
				"max-file": strconv.Itoa(s.cfg.LogMaxFiles),
			}},
			Networks: []swarm.NetworkAttachmentConfig{{Target: netID}},
		},
		Mode:         swarm.ServiceMode{Replicated: &swarm.ReplicatedService{Replicas: &one}},
		UpdateConfig: &swarm.UpdateConfig{Parallelism: 1, Order: order},
		EndpointSpec: &swarm.EndpointSpec{Mode: swarm.ResolutionModeVIP, Ports: []swarm.PortConfig{{
			Protocol:      swarm.PortConfigProtocolTCP,
			TargetPort:    uint32(spec.ContainerPort), //nolint:gosec // Validate bounds ports to 1-65535.
			PublishedPort: uint32(spec.HostPort),      //nolint:gosec // as above.
			PublishMode:   mode,
		}}},
	}
}

// verifyServiceHardening compares the service swarm stored with what was asked and returns one
// line per setting that did not stick. A manager drops the fields its API version does not
// know; the ones the README lists as known differences (no-new-privileges before API 1.46)
// are left out here, since no engine of that version could run a tenant otherwise.
func verifyServiceHardening(want, got swarm.ServiceSpec) []string {
	w, g := want.TaskTemplate.ContainerSpec, got.TaskTemplate.ContainerSpec
	if g == nil {
		return []string{"the stored service has no container spec"}
	}
	var p []string
	if g.User != w.User || isRootUser(g.User) {
		p = append(p, fmt.Sprintf("user is %q, want %q", g.User, w.User))
	}
	if !g.ReadOnly {
		p = append(p, "root filesystem is writable")
	}
	if !slices.ContainsFunc(g.CapabilityDrop, func(c string) bool { return strings.EqualFold(c, capDropAll) || strings.EqualFold(c, "CAP_ALL") }) {
		p = append(p, fmt.Sprintf("capabilities dropped are %v, want ALL (the engine's API is older than 1.41)", g.CapabilityDrop))
	}
	if len(g.CapabilityAdd) > 0 {
		p = append(p, fmt.Sprintf("capabilities added: %v", g.CapabilityAdd))
	}
	wl := want.TaskTemplate.Resources.Limits
	var gl swarm.Limit
	if r := got.TaskTemplate.Resources; r != nil && r.Limits != nil {
		gl = *r.Limits
	}
	if gl.MemoryBytes != wl.MemoryBytes {
		p = append(p, fmt.Sprintf("memory limit is %d, want %d", gl.MemoryBytes, wl.MemoryBytes))
	}
	if gl.NanoCPUs != wl.NanoCPUs {
		p = append(p, fmt.Sprintf("cpu limit is %d nano-CPUs, want %d", gl.NanoCPUs, wl.NanoCPUs))
	}
	if gl.Pids != wl.Pids {
		p = append(p, fmt.Sprintf("pid limit is %d, want %d (the engine's API is older than 1.41)", gl.Pids, wl.Pids))
	}
	tmpfs := slices.ContainsFunc(g.Mounts, func(m mount.Mount) bool {
		return m.Type == mount.TypeTmpfs && m.Target == tmpDir && m.TmpfsOptions != nil && m.TmpfsOptions.SizeBytes == w.Mounts[0].TmpfsOptions.SizeBytes
	})
	if !tmpfs {
		p = append(p, fmt.Sprintf("no tmpfs %s of %d bytes", tmpDir, w.Mounts[0].TmpfsOptions.SizeBytes))
	}
	for _, m := range g.Mounts {
		if m.Type == mount.TypeBind || strings.Contains(m.Source, "docker.sock") {
			p = append(p, fmt.Sprintf("host path mounted: %s at %s", m.Source, m.Target))
		}
	}
	if rp := got.TaskTemplate.RestartPolicy; rp == nil || rp.Condition != swarm.RestartPolicyConditionOnFailure {
		p = append(p, "restart policy is not on-failure")
	}
	return p
}
