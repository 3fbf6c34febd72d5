// Package events is Convergence's wire contract on NATS JetStream: the subjects, the stream and
// durable-consumer definitions, the CloudEvents 1.0 envelope, and the versioned payload structs
// that the platform's services and outside integrators exchange.
//
// It is its own module with few dependencies, so an integrator can import it without pulling
// in Docker or PostgreSQL drivers. Payload structs follow one rule: adding a field is fine;
// renaming or removing one makes a new version with a new event type.
package events
