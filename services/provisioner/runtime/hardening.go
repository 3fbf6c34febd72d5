package runtime

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/mount"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/go-connections/nat"
)

// Hardening values every tenant container gets; see DESIGN.md section 4.
const (
	capDropAll      = "ALL"
	noNewPrivileges = "no-new-privileges"
	tmpDir          = "/tmp"
	logDriver       = "json-file"
)

// containerSpec is everything ContainerCreate takes for one tenant.
type containerSpec struct {
	name    string
	config  *container.Config
	host    *container.HostConfig
	network *network.NetworkingConfig
}

// tmpfsOptions returns the mount options of the tenant's /tmp.
func (d *Docker) tmpfsOptions() string {
	return "rw,noexec,nosuid,nodev,size=" + strconv.FormatInt(d.cfg.TmpfsBytes, 10)
}

// containerSpec builds the hardened container for spec (defaults applied) on network netName.
// Nothing of the host is mounted: no bind, never the Docker socket; only a volume of the
// container's own for its secrets, when it has any.
func (d *Docker) containerSpec(spec Spec, hash, netName string) containerSpec {
	port := nat.Port(strconv.Itoa(spec.ContainerPort) + "/tcp")
	pids := spec.Limits.PIDs
	labels := specLabels(spec, hash, d.cfg.Labels)
	var mounts []mount.Mount
	if len(spec.Secrets) > 0 {
		// Named, so that a container someone removed without its volumes leaves nothing
		// nameless behind (Remove and the reconciler remove it by name), and labelled like the
		// container. Writable, since the engine copies only into a container's volumes; the
		// root filesystem stays read-only.
		mounts = []mount.Mount{{Type: mount.TypeVolume, Source: d.VolumeName(spec.EnvID), Target: SecretsDir,
			VolumeOptions: &mount.VolumeOptions{Labels: labels}}}
	}
	return containerSpec{
		name: d.ContainerName(spec.EnvID),
		config: &container.Config{
			Image:        spec.Image,
			User:         d.cfg.User,
			Env:          spec.env(),
			ExposedPorts: nat.PortSet{port: {}},
			Labels:       labels,
		},
		host: &container.HostConfig{
			NetworkMode: container.NetworkMode(netName),
			PortBindings: nat.PortMap{port: {{
				HostIP:   d.cfg.HostIP,
				HostPort: strconv.Itoa(spec.HostPort),
			}}},
			RestartPolicy: container.RestartPolicy{
				Name:              container.RestartPolicyOnFailure,
				MaximumRetryCount: d.cfg.RestartRetries,
			},
			LogConfig: container.LogConfig{
				Type: logDriver,
				Config: map[string]string{
					"max-size": d.cfg.LogMaxSize,
					"max-file": strconv.Itoa(d.cfg.LogMaxFiles),
				},
			},
			ReadonlyRootfs: true,
			Tmpfs:          map[string]string{tmpDir: d.tmpfsOptions()},
			Mounts:         mounts,
			CapDrop:        []string{capDropAll},
			SecurityOpt:    []string{noNewPrivileges},
			ExtraHosts:     slices.Clone(d.cfg.ExtraHosts),
			Resources: container.Resources{
				Memory:     spec.Limits.MemoryBytes,
				MemorySwap: spec.Limits.MemoryBytes, // equal to Memory: no swap
				NanoCPUs:   spec.Limits.NanoCPUs,
				PidsLimit:  &pids,
			},
		},
		network: &network.NetworkingConfig{
			EndpointsConfig: map[string]*network.EndpointSettings{netName: {}},
		},
	}
}

// verifyHardening compares what the engine created with what was asked and returns one line
// per setting that did not apply. The engine silently drops settings the kernel cannot
// enforce (it only warns), so the inspected container is the only proof.
func verifyHardening(want containerSpec, got container.InspectResponse) []string {
	if got.Config == nil || got.HostConfig == nil {
		return []string{"inspect returned no config"}
	}
	var p []string
	h := got.HostConfig
	if u := got.Config.User; u != want.config.User || isRootUser(u) {
		root := ""
		if isRootUser(u) {
			root = " (root)"
		}
		p = append(p, fmt.Sprintf("user is %q%s, want %q", u, root, want.config.User))
	}
	if h.Privileged {
		p = append(p, "container is privileged")
	}
	if !h.ReadonlyRootfs {
		p = append(p, "root filesystem is writable")
	}
	if !slices.ContainsFunc(h.CapDrop, func(c string) bool { return strings.EqualFold(c, capDropAll) || strings.EqualFold(c, "CAP_ALL") }) {
		p = append(p, fmt.Sprintf("capabilities dropped are %v, want ALL", []string(h.CapDrop)))
	}
	if len(h.CapAdd) > 0 {
		p = append(p, fmt.Sprintf("capabilities added: %v", []string(h.CapAdd)))
	}
	if !slices.ContainsFunc(h.SecurityOpt, isNoNewPrivileges) {
		p = append(p, fmt.Sprintf("security options are %v, want no-new-privileges", h.SecurityOpt))
	}
	wr := want.host.Resources
	if h.Memory != wr.Memory {
		p = append(p, fmt.Sprintf("memory limit is %d, want %d", h.Memory, wr.Memory))
	}
	if h.MemorySwap != wr.Memory {
		p = append(p, fmt.Sprintf("memory+swap limit is %d, want %d (no swap)", h.MemorySwap, wr.Memory))
	}
	if h.NanoCPUs != wr.NanoCPUs {
		p = append(p, fmt.Sprintf("cpu limit is %d nano-CPUs, want %d", h.NanoCPUs, wr.NanoCPUs))
	}
	if h.PidsLimit == nil || *h.PidsLimit != *wr.PidsLimit {
		got := "unlimited"
		if h.PidsLimit != nil {
			got = strconv.FormatInt(*h.PidsLimit, 10)
		}
		p = append(p, fmt.Sprintf("pid limit is %s, want %d", got, *wr.PidsLimit))
	}
	if opts, ok := h.Tmpfs[tmpDir]; !ok || opts != want.host.Tmpfs[tmpDir] {
		p = append(p, fmt.Sprintf("tmpfs %s is %q, want %q", tmpDir, opts, want.host.Tmpfs[tmpDir]))
	}
	if h.NetworkMode != want.host.NetworkMode {
		p = append(p, fmt.Sprintf("network is %q, want %q", h.NetworkMode, want.host.NetworkMode))
	}
	if len(h.Binds) > 0 {
		p = append(p, fmt.Sprintf("bind mounts present: %v", h.Binds))
	}
	for _, m := range got.Mounts {
		if m.Type == mount.TypeBind || strings.Contains(m.Source, "docker.sock") {
			p = append(p, fmt.Sprintf("host path mounted: %s at %s", m.Source, m.Destination))
		}
	}
	if !bindingsEqual(h.PortBindings, want.host.PortBindings) {
		p = append(p, fmt.Sprintf("port bindings are %v, want %v", h.PortBindings, want.host.PortBindings))
	}
	return p
}

// isNoNewPrivileges reports whether a security option enables no-new-privileges, in any of
// the spellings the engine accepts.
func isNoNewPrivileges(opt string) bool {
	switch opt {
	case noNewPrivileges, noNewPrivileges + ":true", noNewPrivileges + "=true":
		return true
	}
	return false
}

// isRootUser reports whether a container user string runs as root. An empty user means the
// image's default, which may well be root.
func isRootUser(u string) bool {
	uid, gid, _ := strings.Cut(u, ":")
	return uid == "" || uid == "0" || uid == "root" || gid == "0" || gid == "root"
}

// bindingsEqual compares port maps ignoring order.
func bindingsEqual(a, b nat.PortMap) bool {
	if len(a) != len(b) {
		return false
	}
	for port, ab := range a {
		bb, ok := b[port]
		if !ok || len(ab) != len(bb) {
			return false
		}
		for _, x := range ab {
			if !slices.Contains(bb, x) {
				return false
			}
		}
	}
	return true
}
