// Package metering keeps the usage ledger: it consumes convergence results and tenant lifecycle
// facts, records every token and container-second exactly once, prices them, and keeps the
// rollups the usage API reads current in the same transaction.
//
// # Ingest
//
// Two durable consumers, shared by every replica: metering-results on CONVERGE_RESULTS
// (converge.completed, converge.failed) and metering-lifecycle on TENANT_LIFECYCLE, each a
// batch consumer of pkg/events/consumer. Each pulls what is pending, up to
// metering.batch-size messages (Fetch / FetchNoWait), records the batch
// in one transaction (package ledger), and acknowledges the messages only after the commit;
// while one batch is recorded, the next is pulled and decoded. The event ID is the unique key
// of the effect, so a message redelivered after a lost ack, a republished event, or one that
// two replicas handle at once is counted once.
//
// The rollup deltas each transaction appends are merged into the daily and monthly rollups every
// metering.rollup-merge by one replica at a time (see package ledger); answers include the
// deltas not merged yet, so they are current either way.
//
// Failures are sorted by cause. A message that is not a valid event, or whose data the ledger
// refuses (negative counts, no tenant), is copied to deadletter.<consumer> and terminated, the
// rest of its batch going on without it. A database that does not answer is no fault of the
// messages: the replica holds its batch, keeps it with InProgress heartbeats, and retries with
// backoff until the database is back. A message delivered metering.max-deliver times is handled
// alone and dead-lettered if it still fails.
//
// # Prices
//
// The price table is read from metering.prices (the built-in table of package pricing when
// empty), registered as a price version in the database, and checked for changes every
// metering.prices-reload. A changed file must carry a new version label; a file that does not
// parse is logged and counted, and the prices in force stay. Usage of a model the table does not
// price is recorded unpriced, flagged in metering_unpriced_models and counted in
// convergence_metering_unpriced_*, and priced later by a reconciliation repair.
//
// # Reconciliation
//
// Reconcile compares the ledger with the converger's task records, which the converger answers
// for on the bus, over a period and reports or repairs the gaps; cmd/convergence runs it as a
// command, and the API asks for it on the bus for an admin endpoint.
package metering
