// Package e2e holds the platform's end-to-end tests and nothing else: every part is real. A
// test runs the whole platform in its own process (internal/platform: API, provisioner,
// converger with the simulated LLM provider, metering) on a fresh PostgreSQL database and an
// embedded JetStream, with the provisioner on the machine's Docker engine, and drives it from
// the outside: the admin API, the tenant SDK (pkg/client) against the real API server, and
// the default tenant app (tenant-templates/go) running in its container and calling the
// platform back with its own key.
package e2e
