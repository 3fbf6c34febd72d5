package events

import (
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Stream names.
const (
	StreamTenantCommands   = "TENANT_COMMANDS"
	StreamTenantLifecycle  = "TENANT_LIFECYCLE"
	StreamConvergeCommands = "CONVERGE_COMMANDS"
	StreamConvergeResults  = "CONVERGE_RESULTS"
	StreamDeadLetter       = "DEAD_LETTER"
	StreamTenantKeys       = "TENANT_KEYS"
	StreamBilling          = "BILLING"
)

// DuplicateWindow is how long JetStream remembers a Nats-Msg-Id to drop a repeated publish.
// An outbox relay that dies after publishing and before marking its rows republishes them
// within seconds, far inside this window.
const DuplicateWindow = 10 * time.Minute

// Streams returns the definitions of every stream the platform uses. Commands sit in work-queue
// streams (each message is removed once a consumer acks it); facts sit in limits streams kept
// for replay, so an integrator can start a consumer late and still read history. Every stream
// uses file storage and accepts atomic batches, which a publisher of many messages (the outbox
// relay) uses to have a batch stored with one fsync instead of one per message.
func Streams() []jetstream.StreamConfig {
	streams := []jetstream.StreamConfig{
		{
			Name:        StreamTenantCommands,
			Description: "Commands to the provisioner: spawn and destroy tenants.",
			Subjects:    []string{SubjectTenantSpawn, SubjectTenantDestroy},
			Retention:   jetstream.WorkQueuePolicy,
			Storage:     jetstream.FileStorage,
			Duplicates:  DuplicateWindow,
		},
		{
			Name:        StreamTenantLifecycle,
			Description: "Facts: tenant lifecycle changes, kept for replay.",
			Subjects:    []string{SubjectTenantLifecycle},
			Retention:   jetstream.LimitsPolicy,
			Storage:     jetstream.FileStorage,
			MaxAge:      90 * 24 * time.Hour,
			Duplicates:  DuplicateWindow,
		},
		{
			Name:        StreamConvergeCommands,
			Description: "Commands to the converger: convergence requests.",
			Subjects:    []string{SubjectConvergeRequest},
			Retention:   jetstream.WorkQueuePolicy,
			Storage:     jetstream.FileStorage,
			Duplicates:  DuplicateWindow,
		},
		{
			Name:        StreamConvergeResults,
			Description: "Facts: finished convergence tasks with their usage, kept for replay.",
			Subjects:    []string{SubjectConvergeCompleted, SubjectConvergeFailed},
			Retention:   jetstream.LimitsPolicy,
			Storage:     jetstream.FileStorage,
			MaxAge:      90 * 24 * time.Hour,
			Duplicates:  DuplicateWindow,
		},
		{
			Name: StreamTenantKeys,
			Description: "Facts: the digests of the keys tenants were given, for the API to authenticate with; " +
				"kept, so an API database can be rebuilt from them.",
			Subjects:   []string{SubjectTenantKeys},
			Retention:  jetstream.LimitsPolicy,
			Storage:    jetstream.FileStorage,
			Duplicates: DuplicateWindow,
		},
		{
			Name:        StreamBilling,
			Description: "Facts: usage recorded in the ledger, and budgets' alert thresholds crossed, kept for replay.",
			Subjects:    []string{SubjectUsageRecorded, SubjectBudgetThreshold},
			Retention:   jetstream.LimitsPolicy,
			Storage:     jetstream.FileStorage,
			MaxAge:      400 * 24 * time.Hour,
			Duplicates:  DuplicateWindow,
		},
		{
			Name:        StreamDeadLetter,
			Description: "Copies of messages a consumer gave up on, with the reason in headers.",
			Subjects:    []string{SubjectDeadLetter},
			Retention:   jetstream.LimitsPolicy,
			Storage:     jetstream.FileStorage,
			MaxAge:      30 * 24 * time.Hour,
			Duplicates:  DuplicateWindow,
		},
	}
	for i := range streams {
		streams[i].AllowAtomicPublish = true
	}
	return streams
}

// StreamFor returns the name of the platform stream that stores messages published on
// subject, and false when none does.
func StreamFor(subject string) (string, bool) {
	for _, s := range platformStreams() {
		for _, filter := range s.Subjects {
			if subjectMatches(filter, subject) {
				return s.Name, true
			}
		}
	}
	return "", false
}

var platformStreams = sync.OnceValue(Streams)

// subjectMatches reports whether subject falls under filter, in which "*" stands for one
// token and a final ">" for one or more.
func subjectMatches(filter, subject string) bool {
	f, s := strings.Split(filter, "."), strings.Split(subject, ".")
	for i, token := range f {
		switch {
		case token == ">":
			return len(s) > i
		case i >= len(s), token != "*" && token != s[i]:
			return false
		}
	}
	return len(f) == len(s)
}

// Platform durable consumers. Each is shared by all replicas of its service, so running more
// replicas spreads the work instead of repeating it.
const (
	ConsumerProvisioner      = "provisioner"
	ConsumerConverger        = "converger"
	ConsumerMeteringResults  = "metering-results"
	ConsumerMeteringLifecyle = "metering-lifecycle"
	ConsumerAPIKeys          = "api-keys"
	// ConsumerAPITaskEnds: the API, for when its tasks ended (tenants' caps count the rest).
	ConsumerAPITaskEnds = "api-task-ends"
	// ConsumerConvergerTenants: the converger, for the destroyed tenants whose tasks it cancels.
	ConsumerConvergerTenants = "converger-tenants"
	// ConsumerConvergerDeadLetters: the converger, for the converge requests its consumer gave
	// up on, whose tasks it fails.
	ConsumerConvergerDeadLetters = "converger-dead-letters"
	// ConsumerConvergerBudgetAlerts: the converger, for the budget alerts it delivers as
	// webhooks.
	ConsumerConvergerBudgetAlerts = "converger-budget-alerts"
)
