package runtime

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/network"
)

// Ensure makes the tenant's network and container exist, match spec, and run. It is
// idempotent: a container of the same spec hash is only started if it is not running, one of
// another hash is replaced. Steps: check the image exists locally (it is never pulled), create
// or adopt the network, create the container, inspect it and verify the hardening, start it.
// Any failure after the first object was created removes what this call created, even when
// ctx is done, and the error wraps [ErrImageNotFound], [ErrHardeningNotApplied],
// [ErrPortUnavailable] or [ErrInvalidSpec] where one applies.
func (d *Docker) Ensure(ctx context.Context, spec Spec) (Instance, error) {
	spec = spec.WithDefaults()
	if err := spec.Validate(); err != nil {
		return Instance{}, err
	}
	hash := spec.SpecHash()
	log := d.log.With("envId", spec.EnvID, "container", d.ContainerName(spec.EnvID))

	existing, err := d.inspect(ctx, spec.EnvID)
	switch {
	case err == nil && existing.Config.Labels[LabelSpecHash] == hash:
		return d.adopt(ctx, existing)
	case err == nil:
		log.Info("replacing tenant container with a changed spec",
			"oldSpecHash", existing.Config.Labels[LabelSpecHash], "specHash", hash)
		if _, err := d.Remove(ctx, spec.EnvID, d.cfg.ReplaceGrace); err != nil {
			return Instance{}, fmt.Errorf("replace container: %w", err)
		}
	case errors.Is(err, ErrNotFound):
	default:
		return Instance{}, err
	}
	return d.create(ctx, spec, hash)
}

// adopt starts an existing container with the wanted spec hash if it is not running, and
// describes it.
func (d *Docker) adopt(ctx context.Context, c container.InspectResponse) (Instance, error) {
	if !c.State.Running && !c.State.Restarting {
		if err := d.cli.ContainerStart(ctx, c.ID, container.StartOptions{}); err != nil {
			return Instance{}, fmt.Errorf("start existing container %s: %w", strings.TrimPrefix(c.Name, "/"), err)
		}
	}
	inst := Instance{
		EnvID:         labelInt(c.Config.Labels, LabelEnvID),
		ContainerID:   c.ID,
		ContainerName: strings.TrimPrefix(c.Name, "/"),
		NetworkName:   string(c.HostConfig.NetworkMode),
		HostPort:      publishedPort(c),
		SpecHash:      c.Config.Labels[LabelSpecHash],
	}
	if c.NetworkSettings != nil {
		if ep, ok := c.NetworkSettings.Networks[inst.NetworkName]; ok && ep != nil {
			inst.NetworkID = ep.NetworkID
		}
	}
	return inst, nil
}

// CheckImage returns nil when ref is on the Docker host, an error wrapping ErrImageNotFound
// (saying how to get it) when it is not, or the engine's error.
func (d *Docker) CheckImage(ctx context.Context, ref string) error {
	if _, err := d.cli.ImageInspect(ctx, ref); err != nil {
		if isNotFound(err) {
			return fmt.Errorf("%w: %q is not on the Docker host (images are never pulled: build or load it first; make images builds the templates')", ErrImageNotFound, ref)
		}
		return fmt.Errorf("inspect image %s: %w", ref, err)
	}
	return nil
}

// create makes the network and container for a tenant that has no container. It undoes
// its own work on failure.
func (d *Docker) create(ctx context.Context, spec Spec, hash string) (_ Instance, err error) {
	log := d.log.With("envId", spec.EnvID, "container", d.ContainerName(spec.EnvID))
	if err := d.CheckImage(ctx, spec.Image); err != nil {
		return Instance{}, err
	}

	// The calls that create objects run to their end even when ctx is done: the engine may
	// finish a create whose caller gave up, and the object would be left behind with nobody
	// knowing it. ctx is checked after them instead, and a cancelled Ensure removes what it
	// made like any failed one.
	engine, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	netID, netCreated, err := d.ensureNetwork(engine, spec, hash)
	if err != nil {
		return Instance{}, err
	}
	var containerID string
	defer func() {
		if err == nil {
			return
		}
		// The caller's ctx may be what failed; cleanup gets its own time.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
		defer cancel()
		if containerID != "" {
			if rerr := d.cli.ContainerRemove(cctx, containerID, container.RemoveOptions{Force: true, RemoveVolumes: true}); rerr != nil && !isNotFound(rerr) {
				log.Error("remove container after failed ensure", "err", rerr)
			}
		}
		if netCreated {
			if rerr := d.cli.NetworkRemove(cctx, netID); rerr != nil && !isNotFound(rerr) {
				log.Error("remove network after failed ensure", "err", rerr)
			}
		}
		if len(spec.Secrets) > 0 {
			if rerr := d.removeVolume(cctx, spec.EnvID); rerr != nil {
				log.Error("remove secrets volume after failed ensure", "err", rerr)
			}
		}
	}()

	if ctx.Err() != nil {
		return Instance{}, fmt.Errorf("ensure %s: %w", d.ContainerName(spec.EnvID), context.Cause(ctx))
	}
	cs := d.containerSpec(spec, hash, d.NetworkName(spec.EnvID))
	created, err := d.cli.ContainerCreate(engine, cs.config, cs.host, cs.network, nil, cs.name)
	if err != nil {
		if isConflict(err) {
			// A concurrent Ensure of this tenant won the race; adopt its container if it
			// has the same spec. Its network is in use now, so do not remove it.
			netCreated = false
			if c, ierr := d.inspect(ctx, spec.EnvID); ierr == nil && c.Config.Labels[LabelSpecHash] == hash {
				return d.adopt(ctx, c)
			}
		}
		if isNotFound(err) && strings.Contains(strings.ToLower(err.Error()), "image") {
			// The image went away after the check above.
			return Instance{}, fmt.Errorf("create container %s: %w: %q: %w", cs.name, ErrImageNotFound, spec.Image, err)
		}
		return Instance{}, fmt.Errorf("create container %s: %w", cs.name, err)
	}
	containerID = created.ID
	for _, w := range created.Warnings {
		log.Warn("engine warning on container create", "warning", w)
	}
	if ctx.Err() != nil {
		return Instance{}, fmt.Errorf("ensure %s: %w", cs.name, context.Cause(ctx))
	}

	got, err := d.cli.ContainerInspect(ctx, containerID)
	if err != nil {
		return Instance{}, fmt.Errorf("inspect new container %s: %w", cs.name, err)
	}
	if problems := verifyHardening(cs, got); len(problems) > 0 {
		return Instance{}, fmt.Errorf("container %s: %w: %s", cs.name, ErrHardeningNotApplied, strings.Join(problems, "; "))
	}
	if err := d.putSecrets(engine, containerID, spec.Secrets); err != nil {
		return Instance{}, fmt.Errorf("container %s: %w", cs.name, err)
	}

	if err := d.cli.ContainerStart(ctx, containerID, container.StartOptions{}); err != nil {
		if isPortInUse(err) {
			return Instance{}, fmt.Errorf("start container %s: %w: %d on %s: %w", cs.name, ErrPortUnavailable, spec.HostPort, d.cfg.HostIP, err)
		}
		return Instance{}, fmt.Errorf("start container %s: %w", cs.name, err)
	}
	log.Info("tenant container started", "containerId", containerID[:12], "hostPort", spec.HostPort, "image", spec.Image, "specHash", hash)
	return Instance{
		EnvID:         spec.EnvID,
		ContainerID:   containerID,
		ContainerName: cs.name,
		NetworkID:     netID,
		NetworkName:   d.NetworkName(spec.EnvID),
		HostPort:      spec.HostPort,
		SpecHash:      hash,
		Created:       true,
	}, nil
}

// putSecrets writes secrets as files into the container's secrets volume, owned by the
// tenant's user with mode 0400, before the container starts.
func (d *Docker) putSecrets(ctx context.Context, containerID string, secrets map[string]string) error {
	if len(secrets) == 0 {
		return nil
	}
	uid, gid, err := userIDs(d.cfg.User)
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, name := range slices.Sorted(maps.Keys(secrets)) {
		hdr := &tar.Header{Name: name, Mode: 0o400, Size: int64(len(secrets[name])), Uid: uid, Gid: gid, ModTime: time.Now()}
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("secrets archive: %w", err)
		}
		if _, err := tw.Write([]byte(secrets[name])); err != nil {
			return fmt.Errorf("secrets archive: %w", err)
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("secrets archive: %w", err)
	}
	if err := d.cli.CopyToContainer(ctx, containerID, SecretsDir, &buf, container.CopyToContainerOptions{}); err != nil {
		return fmt.Errorf("put secrets: %w", err)
	}
	return nil
}

// userIDs reads a numeric uid:gid.
func userIDs(user string) (uid, gid int, err error) {
	u, g, _ := strings.Cut(user, ":")
	if uid, err = strconv.Atoi(u); err == nil {
		gid, err = strconv.Atoi(g)
	}
	if err != nil {
		return 0, 0, fmt.Errorf("tenant user %q must be a numeric uid:gid to own its secret files", user)
	}
	return uid, gid, nil
}

// ensureNetwork returns the tenant's network, creating it unless a managed one with the same
// spec hash already exists (left by an Ensure that died before creating the container). It
// reports whether this call created it.
func (d *Docker) ensureNetwork(ctx context.Context, spec Spec, hash string) (id string, created bool, err error) {
	name := d.NetworkName(spec.EnvID)
	existing, err := d.inspectNetwork(ctx, name)
	switch {
	case err == nil:
		if !managedBy(existing.Labels, d.cfg.Labels) {
			return "", false, fmt.Errorf("network %s: %w", name, ErrNotManaged)
		}
		if existing.Labels[LabelSpecHash] == hash {
			return existing.ID, false, nil
		}
		// A leftover from an older spec: its labels would lie, so replace it.
		if err := d.cli.NetworkRemove(ctx, existing.ID); err != nil && !isNotFound(err) {
			return "", false, fmt.Errorf("remove stale network %s: %w", name, err)
		}
	case isNotFound(err):
	default:
		return "", false, fmt.Errorf("inspect network %s: %w", name, err)
	}

	driverOpts, err := d.networkOptions(spec)
	if err != nil {
		return "", false, err
	}
	opts := network.CreateOptions{
		Driver:  "bridge",
		Options: driverOpts,
		Labels:  specLabels(spec, hash, d.cfg.Labels),
	}
	resp, err := d.createNetwork(ctx, name, opts)
	if err != nil {
		if isConflict(err) {
			// A concurrent Ensure created it first; use theirs.
			if n, ierr := d.inspectNetwork(ctx, name); ierr == nil && managedBy(n.Labels, d.cfg.Labels) {
				return n.ID, false, nil
			}
		}
		return "", false, fmt.Errorf("create network %s: %w", name, err)
	}
	if resp.Warning != "" {
		d.log.Warn("engine warning on network create", "network", name, "warning", resp.Warning)
	}
	return resp.ID, true, nil
}

// createNetwork creates a bridge network, on the first free subnet of the pool when the
// runtime has one. It wraps [ErrNoSubnet] when every subnet it tried is taken.
func (d *Docker) createNetwork(ctx context.Context, name string, opts network.CreateOptions) (network.CreateResponse, error) {
	if !d.ownSubnets {
		resp, err := d.cli.NetworkCreate(ctx, name, opts)
		if isPoolExhausted(err) {
			return resp, fmt.Errorf("%w (the engine's default address pools are used up; set a subnet pool): %w", ErrNoSubnet, err)
		}
		return resp, err
	}
	candidates := d.subnets.candidates(name)
	for _, subnet := range candidates {
		opts.IPAM = &network.IPAM{Config: []network.IPAMConfig{{Subnet: subnet.String()}}}
		resp, err := d.cli.NetworkCreate(ctx, name, opts)
		if isSubnetTaken(err) {
			continue
		}
		return resp, err
	}
	return network.CreateResponse{}, fmt.Errorf("%w: tried %d subnets of %s", ErrNoSubnet, len(candidates), d.cfg.SubnetPool)
}

// PutSecrets writes secrets into tenant envID's container, running or not, in place of the
// files of the same names: the container is not restarted, and its app finds the new files at
// once (each file is replaced whole, though not atomically: a reader may briefly find none). It
// wraps [ErrNotFound] when the tenant has no container.
func (d *Docker) PutSecrets(ctx context.Context, envID int64, secrets map[string]string) error {
	c, err := d.inspect(ctx, envID)
	if err != nil {
		return err
	}
	if err := d.putSecrets(ctx, c.ID, secrets); err != nil {
		return fmt.Errorf("container %s: %w", strings.TrimPrefix(c.Name, "/"), err)
	}
	return nil
}
