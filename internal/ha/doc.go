// Package ha holds the platform's fault tests under load: a PostgreSQL server, a three-node
// JetStream cluster with three copies of every stream and two replicas of every service (each
// a `convergence serve` process), with converge requests, spawns and destroys in flight while
// one part fails. After each fault every accepted task finishes or fails with a reason, the
// ledger reconciles exactly with the converger's records, and every tenant the database knows
// has exactly one container; each test prints how long the platform took to answer again.
//
// `make test` runs the representative one (a replica of every service killed with SIGKILL);
// `make test-ha` runs them all (CONVERGENCE_TEST_HA=1).
package ha
