package provisioner

// SetAfterEnsureHook makes s call f after it created and started a tenant's container, before
// it waits for health and records the outcome: the point where a crash leaves a container the
// database does not yet know runs.
func SetAfterEnsureHook(s *Service, f func(envID int64)) { s.hooks.afterEnsure = f }
