// Package httpx is the HTTP plumbing every process shares: the echo server with request IDs,
// panic recovery, access logs and the JSON error envelope, and the helpers handlers use to
// answer errors the same way everywhere.
package httpx
