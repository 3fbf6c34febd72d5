// Package tasks is the converger's record of convergence tasks: the convergence_tasks row and
// the turns and rounds persisted while a task runs, the JSON views the API answers with (and
// that webhooks and progress events carry), and the core-NATS messages that tell listeners how
// a task runs.
//
// # Life of a task
//
// The API validates a request and sends it as a converge.request, which carries all of it
// (taskspec.Request). The converger records the task as queued when the request arrives
// ([Store.Accept]; a cancel that comes first records it too), then [Store.Claim]s it, which
// moves it to running and increments its run, the fencing token every later write of that run
// carries: [Store.StartRound] after each round, with the round's turns ([Store.SaveRound] waits
// for its outcome), and [Store.Finish] at
// the end, which records the result and the turns not saved yet (the synthesis, or a round's
// first turn when the run stopped inside it), and writes the converge.completed or
// converge.failed event and the webhook delivery in one transaction; [Store.SaveTurns] saves
// the turns of a run that stops before its end. A write of a run that is
// no longer the task's latest fails with [ErrFenced], so a converger that lost its task to a
// redelivery can neither add turns nor finish it twice.
//
// A redelivered request for a task that has finished is not claimable ([ErrNotClaimable]),
// so the provider is never called for it again. A converger that dies mid-task leaves its
// turns behind; the next claim returns them, and the engine resumes from them without asking
// the provider for them again, so usage is counted once.
//
// # Statuses
//
// queued → running → completed | failed | cancelled. A task ends completed whenever the engine
// returns a result (converged, stalemate, max_rounds, budget_exhausted, timeout), cancelled
// when the tenant cancelled it, and failed when the run failed (a provider error that retrying
// did not fix). converge.completed reports completed tasks; converge.failed reports failed and
// cancelled ones, with the tokens they spent.
//
// # Cancellation
//
// [Store.RequestCancel] records the request durably. A queued task is cancelled on the spot; a
// running one is cancelled by its converger, which learns of it from a core-NATS message on
// [CancelSubject] (at once) or from the record when it saves its next round (if the message
// was lost).
package tasks
