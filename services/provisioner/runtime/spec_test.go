package runtime_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/convergence-dev/convergence/services/provisioner/runtime"
)

func validSpec() runtime.Spec {
	return runtime.Spec{
		EnvID: 1, OrgID: 2, Name: "acme-corp-ai", Image: "convergence/tenant-go:dev", HostPort: 3001,
		Env:        map[string]string{"CONVERGENCE_API_KEY": "sk_tenant_abc", "CONVERGENCE_ENV_ID": "1", "CONVERGENCE_API_URL": "http://api:3000"},
		Generation: 1,
	}
}

func TestSpecHash_SameSpecBuiltTwice_Equal(t *testing.T) {
	t.Parallel()
	a, b := validSpec(), validSpec()
	// Insert the same env in another order; map order must not matter.
	b.Env = map[string]string{"CONVERGENCE_API_URL": "http://api:3000", "CONVERGENCE_ENV_ID": "1", "CONVERGENCE_API_KEY": "sk_tenant_abc"}
	require.Equal(t, a.SpecHash(), b.SpecHash())
	require.Len(t, a.SpecHash(), 64)
	require.NotContains(t, a.SpecHash(), "sk_tenant")
}

func TestSpecHash_DefaultsSpelledOut_Equal(t *testing.T) {
	t.Parallel()
	a := validSpec()
	b := validSpec()
	b.ContainerPort = runtime.DefaultContainerPort
	b.Limits = runtime.Limits{MemoryBytes: runtime.DefaultMemoryBytes, NanoCPUs: runtime.DefaultNanoCPUs, PIDs: runtime.DefaultPIDs}
	require.Equal(t, a.SpecHash(), b.SpecHash())
}

func TestSpecHash_AnyFieldChanged_Differs(t *testing.T) {
	t.Parallel()
	base := validSpec().SpecHash()
	for name, change := range map[string]func(*runtime.Spec){
		"env id":         func(s *runtime.Spec) { s.EnvID++ },
		"org id":         func(s *runtime.Spec) { s.OrgID++ },
		"name":           func(s *runtime.Spec) { s.Name += "x" },
		"image":          func(s *runtime.Spec) { s.Image += "2" },
		"host port":      func(s *runtime.Spec) { s.HostPort++ },
		"container port": func(s *runtime.Spec) { s.ContainerPort = 9090 },
		"env value":      func(s *runtime.Spec) { s.Env["CONVERGENCE_API_KEY"] = "sk_tenant_other" },
		"env added":      func(s *runtime.Spec) { s.Env["EXTRA"] = "" },
		"memory":         func(s *runtime.Spec) { s.Limits.MemoryBytes = 512 << 20 },
		"cpu":            func(s *runtime.Spec) { s.Limits.NanoCPUs = 1e9 },
		"pids":           func(s *runtime.Spec) { s.Limits.PIDs = 10 },
		"generation":     func(s *runtime.Spec) { s.Generation++ },
	} {
		s := validSpec()
		change(&s)
		require.NotEqual(t, base, s.SpecHash(), name)
	}
}

func TestSpecValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		change func(*runtime.Spec)
		want   string // "" means valid
	}{
		{"valid", func(*runtime.Spec) {}, ""},
		{"no env id", func(s *runtime.Spec) { s.EnvID = 0 }, "env id 0 must be positive"},
		{"no org id", func(s *runtime.Spec) { s.OrgID = -1 }, "org id -1 must be positive"},
		{"uppercase name", func(s *runtime.Spec) { s.Name = "Acme" }, "lowercase DNS label"},
		{"name too long", func(s *runtime.Spec) { s.Name = strings.Repeat("a", 64) }, "at most 63"},
		{"name 63 long", func(s *runtime.Spec) { s.Name = strings.Repeat("a", 63) }, ""},
		{"name ends with dash", func(s *runtime.Spec) { s.Name = "acme-" }, "DNS label"},
		{"no image", func(s *runtime.Spec) { s.Image = "" }, "local image reference"},
		{"host port zero", func(s *runtime.Spec) { s.HostPort = 0 }, "host port 0"},
		{"host port too big", func(s *runtime.Spec) { s.HostPort = 70000 }, "host port 70000"},
		{"container port too big", func(s *runtime.Spec) { s.ContainerPort = 70000 }, "container port 70000"},
		{"env sets PORT", func(s *runtime.Spec) { s.Env["PORT"] = "1" }, "set ContainerPort instead"},
		{"env bad name", func(s *runtime.Spec) { s.Env["A-B"] = "1" }, `env name "A-B"`},
		{"env NUL", func(s *runtime.Spec) { s.Env["A"] = "x\x00y" }, "NUL"},
		{"memory too small", func(s *runtime.Spec) { s.Limits.MemoryBytes = 1 << 20 }, "memory limit"},
		{"cpu too small", func(s *runtime.Spec) { s.Limits.NanoCPUs = 1000 }, "cpu limit"},
		{"negative pids", func(s *runtime.Spec) { s.Limits.PIDs = -1 }, "pid limit -1"},
		{"negative generation", func(s *runtime.Spec) { s.Generation = -1 }, "generation -1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := validSpec()
			tt.change(&s)
			err := s.Validate()
			if tt.want == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, runtime.ErrInvalidSpec)
			require.ErrorContains(t, err, tt.want)
		})
	}
}

func TestDockerConfigValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		cfg  runtime.DockerConfig
		want string
	}{
		{"zero value takes defaults", runtime.DockerConfig{}, ""},
		{"all interfaces", runtime.DockerConfig{HostIP: "0.0.0.0"}, ""},
		{"host ip not an ip", runtime.DockerConfig{HostIP: "localhost"}, "must be an IP address"},
		{"root user", runtime.DockerConfig{User: "0:0"}, "must not be root"},
		{"root group", runtime.DockerConfig{User: "1000:0"}, "must not be root"},
		{"named user", runtime.DockerConfig{User: "nobody"}, "numeric uid:gid"},
		{"bad prefix", runtime.DockerConfig{NamePrefix: "-x"}, "name prefix"},
		{"bad log size", runtime.DockerConfig{LogMaxSize: "10 MB"}, "log max size"},
		{"own label", runtime.DockerConfig{Labels: map[string]string{runtime.LabelEnvID: "1"}}, "set by the runtime"},
		{"label with dollar", runtime.DockerConfig{Labels: map[string]string{"a$b": "1"}}, `label "a$b"`},
		{"bad extra host", runtime.DockerConfig{ExtraHosts: []string{"nohost"}}, "name:ip"},
		{"tiny mtu", runtime.DockerConfig{NetworkMTU: 100}, "network mtu"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := tt.cfg.Validate()
			if tt.want == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, tt.want)
		})
	}
}
