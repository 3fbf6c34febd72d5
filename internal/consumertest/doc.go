// Package consumertest holds the tests of pkg/events/consumer, which run on an embedded
// JetStream server: the pkg/events module itself does without the NATS server.
package consumertest
