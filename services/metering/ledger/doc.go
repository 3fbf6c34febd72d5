// Package ledger is the metering's usage ledger in PostgreSQL: it records task usage and
// tenant run time exactly once, prices each line, keeps the rollups current in the same
// transaction, and answers usage summaries, unpriced-model reports and reconciliations from
// them. The metering service writes through it; the API reads through it; the operator's
// reconcile command repairs through it.
//
// # Exactly once
//
// Every source event carries a unique key into the transaction that applies its effect: line
// 0 of its ledger rows (task usage), or its metering_lifecycle_facts row (lifecycle facts).
// The effect (ledger lines and rollup deltas) is written only for the events whose key was
// new, in the same transaction, so a redelivered, republished or concurrently processed event
// changes nothing the second time. A task counts once even when two events report it.
//
// # Rollups
//
// An ingest transaction appends its rollup deltas (one row per UTC day, tenant and model it
// touched) to metering_rollup_pending, a table with no key that no other transaction waits
// on. MergeRollups, run by one process at a time, moves them into the daily and monthly
// rollups in one transaction. Summarize reads the monthly rollup for whole months, the daily
// one for the days at the ends of a range, and whatever is pending, in one snapshot, so its
// answer is current and reads a number of rows that does not grow with the ledger.
//
// # Billable run time
//
// A tenant container is billed while it runs: from a running or unhealthy fact (the container
// process is up and holds its resources, whether or not its health check passes) until the
// next stopped, error, destroyed or provisioning fact. Facts are ordered by their own time
// (At, then event ID), not by arrival, so a late or reordered fact corrects the run time it
// falls into; the correction is booked as a ledger line of its own, possibly negative. The
// time since a tenant's latest fact, while it runs, is an open segment: summaries add it up to
// the moment of the read, and the fact that ends it books it.
//
// # Locking
//
// Ingest transactions take few locks: the ledger's unique keys, in event ID order, and for
// lifecycle facts each tenant's runtime row, in tenant order. Two replicas wait for each other
// only on the same event or tenant, and never deadlock over them.
package ledger
