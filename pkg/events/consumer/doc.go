// Package consumer runs typed event handlers on JetStream durable consumers. One adapter
// decodes messages, recovers panics, logs, counts, and maps each handler's result to an
// acknowledgement: nil → Ack; an error → NakWithDelay with backoff; a Permanent error, an
// undecodable message, or the last allowed delivery → a dead-letter copy, then Term. Handlers
// never touch the NATS message. Long handlers are kept alive with InProgress heartbeats.
//
// Idempotency is the handler's side of the contract: it records its effect under a unique key
// (the event ID, or the task or tenant the event is about) in the transaction that commits it,
// so a redelivered event never doubles an effect.
package consumer
