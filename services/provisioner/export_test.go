package provisioner

import "github.com/convergence-dev/convergence/services/provisioner/runtime"

// SetAfterEnsureHook makes s call f after it created and started a tenant's container, before
// it waits for health and records the outcome: the point where a crash leaves a container the
// database does not yet know runs.
func SetAfterEnsureHook(s *Service, f func(envID int64)) { s.hooks.afterEnsure = f }

// DockerRuntime returns s's runtime as the Docker runtime, for tests of what only it has
// (compose files, the egress policy's bridges, secrets volumes).
func DockerRuntime(s *Service) *runtime.Docker { return s.rt.(*runtime.Docker) }
