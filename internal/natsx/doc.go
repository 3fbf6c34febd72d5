// Package natsx connects the platform to NATS JetStream: it runs the embedded server used in
// development and tests, connects clients, and creates the streams pkg/events defines.
package natsx
