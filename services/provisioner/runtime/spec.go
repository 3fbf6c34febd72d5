package runtime

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/convergence-dev/convergence/services/provisioner/egress"
)

// DefaultContainerPort is the port a tenant app listens on inside its container when the spec
// names none. The app is told its port through the PORT environment variable.
const DefaultContainerPort = 8080

// Default limits, applied to a [Limits] field left zero. A tenant container is never unlimited.
const (
	DefaultMemoryBytes = 256 << 20   // 256 MiB, and no swap on top
	DefaultNanoCPUs    = 500_000_000 // half a CPU
	DefaultPIDs        = 256         // processes and threads
)

const (
	minMemoryBytes  = 6 << 20    // the engine refuses less
	minNanoCPUs     = 10_000_000 // the engine refuses less than 0.01 CPU
	maxPort         = 1<<16 - 1  // highest TCP port
	maxNameLength   = 63         // a DNS label
	specHashVersion = 2          // bump when the meaning of a spec changes
	envPort         = "PORT"     // set by the runtime, never by the spec
	maxSecrets      = 8
	maxSecretBytes  = 64 << 10
)

// Limits caps what one tenant container may use. A zero field takes its default
// ([DefaultMemoryBytes], [DefaultNanoCPUs], [DefaultPIDs]).
type Limits struct {
	// MemoryBytes is the hard memory limit. Swap is disabled, so it is also the limit of
	// memory plus swap, and the tmpfs /tmp counts against it.
	MemoryBytes int64 `json:"memoryBytes"`
	// NanoCPUs is the CPU quota in billionths of a CPU: 500_000_000 is half a core.
	NanoCPUs int64 `json:"nanoCpus"`
	// PIDs caps the number of processes and threads.
	PIDs int64 `json:"pids"`
}

// Spec describes one tenant container: everything that decides what runs. Two specs with the
// same [Spec.SpecHash] describe the same container.
type Spec struct {
	// EnvID is the tenant's environment id; it names the container and network.
	EnvID int64 `json:"envId"`
	// OrgID is the organization that owns the tenant.
	OrgID int64 `json:"orgId"`
	// Name is the tenant's name, a lowercase DNS label; it is informational (a label).
	Name string `json:"name"`
	// Image is a local image reference. It is never pulled.
	Image string `json:"image"`
	// HostPort is the host port the app is published on (leased by the provisioner).
	HostPort int `json:"hostPort"`
	// ContainerPort is the port the app listens on inside the container;
	// zero means [DefaultContainerPort]. The app receives it as PORT.
	ContainerPort int `json:"containerPort"`
	// Env is the app's environment, such as CONVERGENCE_API_URL, CONVERGENCE_API_KEY and
	// CONVERGENCE_ENV_ID. PORT is set by the runtime and may not appear here.
	Env map[string]string `json:"env"`
	// Secrets are files put in [SecretsDir] inside the container (the tenant's API key, say),
	// by name: readable by the tenant's user only (mode 0400), on a volume of the container's
	// own, never in the environment or a generated compose file.
	Secrets map[string]string `json:"secrets,omitempty"`
	// Limits caps the container's resources.
	Limits Limits `json:"limits"`
	// Egress is what the container may reach (see package egress); "" is [egress.Default]. It
	// names the bridge of the tenant's network, which the installation's firewall rules match.
	Egress egress.Class `json:"egress"`
	// Generation counts the provisioner's attempts at this tenant. It is part of the hash, so
	// bumping it makes [Runtime.Ensure] replace the container even if nothing else changed.
	Generation int64 `json:"generation"`
}

// SecretsDir is where a tenant container finds its [Spec.Secrets].
const SecretsDir = "/run/secrets"

var secretName = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)

// WithDefaults returns the spec with every zero field that has a default filled in. Every
// runtime method applies it first; it is exported so callers can see what will run.
func (s Spec) WithDefaults() Spec {
	if s.ContainerPort == 0 {
		s.ContainerPort = DefaultContainerPort
	}
	if s.Limits.MemoryBytes == 0 {
		s.Limits.MemoryBytes = DefaultMemoryBytes
	}
	if s.Limits.NanoCPUs == 0 {
		s.Limits.NanoCPUs = DefaultNanoCPUs
	}
	if s.Limits.PIDs == 0 {
		s.Limits.PIDs = DefaultPIDs
	}
	if s.Egress == "" {
		s.Egress = egress.Default
	}
	return s
}

var (
	dnsLabel = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]*[a-z0-9])?$`)
	envKey   = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
)

// Validate says what is wrong with the spec after defaults, wrapping [ErrInvalidSpec].
func (s Spec) Validate() error {
	s = s.WithDefaults()
	var problems []string
	if s.EnvID <= 0 {
		problems = append(problems, fmt.Sprintf("env id %d must be positive", s.EnvID))
	}
	if s.OrgID <= 0 {
		problems = append(problems, fmt.Sprintf("org id %d must be positive", s.OrgID))
	}
	if len(s.Name) > maxNameLength || !dnsLabel.MatchString(s.Name) {
		problems = append(problems, fmt.Sprintf("name %q must be a lowercase DNS label (a-z, 0-9 and '-', at most 63 characters, not starting or ending with '-')", s.Name))
	}
	if strings.TrimSpace(s.Image) == "" || strings.ContainsAny(s.Image, " \t\n") {
		problems = append(problems, fmt.Sprintf("image %q must be a local image reference", s.Image))
	}
	if s.HostPort < 1 || s.HostPort > maxPort {
		problems = append(problems, fmt.Sprintf("host port %d must be between 1 and %d", s.HostPort, maxPort))
	}
	if s.ContainerPort < 1 || s.ContainerPort > maxPort {
		problems = append(problems, fmt.Sprintf("container port %d must be between 1 and %d", s.ContainerPort, maxPort))
	}
	for k, v := range s.Env {
		switch {
		case !envKey.MatchString(k):
			problems = append(problems, fmt.Sprintf("env name %q must be letters, digits and '_', not starting with a digit", k))
		case k == envPort:
			problems = append(problems, "env must not set PORT; set ContainerPort instead")
		case strings.ContainsRune(v, 0):
			problems = append(problems, fmt.Sprintf("env %s must not contain a NUL byte", k))
		}
	}
	if _, err := egress.ParseClass(string(s.Egress)); err != nil {
		problems = append(problems, err.Error())
	}
	if len(s.Secrets) > maxSecrets {
		problems = append(problems, fmt.Sprintf("%d secret files, at most %d", len(s.Secrets), maxSecrets))
	}
	for name, v := range s.Secrets {
		switch {
		case !secretName.MatchString(name):
			problems = append(problems, fmt.Sprintf("secret file name %q must be lowercase letters, digits, '.', '_' and '-', starting with a letter or digit", name))
		case len(v) > maxSecretBytes:
			problems = append(problems, fmt.Sprintf("secret file %s holds %d bytes, at most %d", name, len(v), maxSecretBytes))
		}
	}
	if s.Limits.MemoryBytes < minMemoryBytes {
		problems = append(problems, fmt.Sprintf("memory limit %d bytes is below the minimum of %d", s.Limits.MemoryBytes, minMemoryBytes))
	}
	if s.Limits.NanoCPUs < minNanoCPUs {
		problems = append(problems, fmt.Sprintf("cpu limit %d nano-CPUs is below the minimum of %d", s.Limits.NanoCPUs, minNanoCPUs))
	}
	if s.Limits.PIDs < 1 {
		problems = append(problems, fmt.Sprintf("pid limit %d must be positive", s.Limits.PIDs))
	}
	if s.Generation < 0 {
		problems = append(problems, fmt.Sprintf("generation %d must not be negative", s.Generation))
	}
	if len(problems) > 0 {
		// Map iteration makes env problems come out in any order; sort for stable messages.
		slices.Sort(problems)
		return fmt.Errorf("%w: %s", ErrInvalidSpec, strings.Join(problems, "; "))
	}
	return nil
}

// SpecHash returns a hex SHA-256 over the spec with defaults applied. It is stable across
// processes and map orders, and changes whenever anything that decides the container changes,
// including Generation. The hash covers the names of the secrets, not their values: a new value
// is put into the running container ([Docker.PutSecrets]), which a rotated key must not
// restart. The runtime's own settings ([DockerConfig]) are not part of it: changing them shapes
// containers created afterwards and leaves running ones alone.
func (s Spec) SpecHash() string {
	s = s.WithDefaults()
	if len(s.Secrets) > 0 {
		names := make(map[string]string, len(s.Secrets))
		for name := range s.Secrets {
			names[name] = ""
		}
		s.Secrets = names
	}
	in := struct {
		Version int  `json:"v"`
		Spec    Spec `json:"spec"`
	}{specHashVersion, s}
	// encoding/json writes map keys sorted, which makes the encoding canonical.
	b, err := json.Marshal(in)
	if err != nil {
		// A Spec holds only strings and integers; Marshal cannot fail on it.
		panic(fmt.Sprintf("runtime: marshal spec: %v", err))
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// env returns the container's environment as sorted KEY=VALUE pairs, PORT included.
func (s Spec) env() []string {
	out := make([]string, 0, len(s.Env)+1)
	for k, v := range s.Env {
		out = append(out, k+"="+v)
	}
	out = append(out, fmt.Sprintf("%s=%d", envPort, s.ContainerPort))
	slices.Sort(out)
	return out
}
