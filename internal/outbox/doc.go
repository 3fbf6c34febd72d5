// Package outbox implements the transactional outbox: a service writes an event in the same
// database transaction as the change it describes (Write), and a Relay publishes the written
// events to JetStream. No event is lost if the process dies between commit and publish, and a
// republish after a crash is dropped by JetStream's duplicate window, because the event ID is
// the Nats-Msg-Id.
package outbox
