// Package platform wires one Convergence process: it starts the infrastructure (PostgreSQL,
// NATS JetStream, the HTTP server, the outbox relay), then the services the process's targets
// name, runs them under one errgroup so the first failure stops the rest, and stops everything
// in reverse order. A process may run all four services (development) or any subset
// (production, one image deployed per service).
package platform
