// Package webhook delivers the final result of a convergence task to the webhook URL its
// request named, signed with the tenant's secret, and keeps a record of every delivery.
//
// # The wire format
//
// Deliveries follow the Standard Webhooks specification (https://www.standardwebhooks.com), so
// a receiver can verify them with any of its libraries. Each is a POST with a JSON body
//
//	{"type": "converge.completed", "timestamp": "...", "data": {<the task, as GET returns it, without the transcript>}}
//
// and three headers:
//
//	webhook-id         the delivery ID, the same on every retry: receivers deduplicate on it
//	webhook-timestamp  seconds since the epoch at this attempt
//	webhook-signature  "v1,<base64 HMAC-SHA256 of id.timestamp.body>", space-separated when
//	                   two secrets sign during a rotation
//
// # Secrets
//
// Each tenant has one secret ("whsec_" and 32 random bytes in base64), created with its first
// task that names a webhook URL or when it first asks for it (EnsureSecret), and rotated on
// request (Rotate). After a rotation the previous secret signs beside the new one for a grace
// period, so a receiver can switch without rejecting a delivery.
//
// # Delivery
//
// A delivery is written in the transaction that finishes its task (Enqueue), so no result is
// finished without its delivery being recorded, and none twice. The [Deliverer] claims due
// deliveries, POSTs them, and records the outcome: a 2xx answer delivers; any other answer or
// a network error is retried with exponential backoff and jitter until Config.RetryFor has
// passed since the delivery was created; 410 Gone, and a target the guard refuses, fail at
// once. Redirects are not followed.
//
// # Request forgery
//
// A webhook URL is the tenant's to choose, so by default the deliverer refuses to connect to
// any address that is not public unicast: loopback, private (RFC 1918, fc00::/7), link-local
// (which holds cloud metadata services), shared (100.64.0.0/10), unspecified, multicast and
// reserved ranges. The check is made on the address actually dialled, after DNS resolution,
// so a name that resolves to an internal address, or changes to one, is refused too.
// Config.AllowPrivateTargets lifts it, for tests and for deployments that deliver inside
// their own network.
package webhook
