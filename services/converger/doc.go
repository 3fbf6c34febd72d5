// Package converger runs dual-agent convergence: it consumes converge.request, runs the loop of
// two role-playing agents (package engine) against the configured LLM provider (package llm),
// persists every turn and round, streams progress on core NATS, records the result with its
// converge.completed or converge.failed event through the outbox, and delivers webhooks
// (package webhook).
//
// # Delivery guarantees
//
// The converger is one durable consumer ("converger") shared by all replicas, each running up
// to Config.Concurrency tasks at once, with InProgress heartbeats while a task runs or waits.
// Each holds up to Config.MaxWaiting more requests waiting for a slot, which go to the waiting
// tenants in turn (fairSlots): one tenant's flood waits beside another's task, not ahead of it.
//
//   - A redelivered request for a task that has finished is acknowledged without a provider
//     call (tasks.Store.Claim refuses it).
//   - Every turn is persisted before the next provider call. A converger that dies mid-task
//     loses at most the call in flight; when JetStream redelivers the request (after
//     Config.AckWait without a heartbeat) the next converger resumes from the persisted turns,
//     so no billed turn is asked for again and usage is counted once.
//   - Each claim increments the task's run, and every write carries it: a converger that lost
//     its task to a redelivery stops at its next write and never finishes the task.
//   - A shutdown leaves running tasks to their next delivery (NakWithDelay 0): another replica,
//     or this one after its restart, resumes them at once.
//   - A provider failure that retrying did not fix is retried by redelivery, resuming from the
//     persisted turns, until the last allowed delivery, which fails the task. A request the
//     provider rejects fails the task at once.
//
// # Cancellation and time limits
//
// A cancel request reaches the converger running the task on core NATS (tasks.CancelSubject),
// and durably through the task's record, which the converger reads each time it saves a round.
// A task's timeout counts from its first start, so a resumed task does not get a new one.
package converger
