package natsauth

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"

	"github.com/convergence-dev/convergence/pkg/events"
)

// Role is what a NATS user may do: one per service, read-only integrators, and admin.
type Role string

// The roles.
const (
	API         Role = "api"
	Provisioner Role = "provisioner"
	Converger   Role = "converger"
	Metering    Role = "metering"
	// Integrator reads the platform's facts (tenant lifecycle, convergence results, usage
	// recorded, budget alerts) and nothing else: no commands, no prompts, no stream or platform
	// consumer management.
	Integrator Role = "integrator"
	// Admin may do anything: it creates the streams, and is the operator's own tool.
	Admin Role = "admin"
)

// Roles lists every role, services first.
func Roles() []Role { return []Role{API, Provisioner, Converger, Metering, Integrator, Admin} }

// RoleNames lists the roles' names, for messages.
func RoleNames() string {
	names := make([]string, 0, len(Roles()))
	for _, r := range Roles() {
		names = append(names, string(r))
	}
	return strings.Join(names, ", ")
}

// ParseRole returns the role named s.
func ParseRole(s string) (Role, error) {
	if r := Role(s); slices.Contains(Roles(), r) {
		return r, nil
	}
	return "", fmt.Errorf("unknown nats role %q; one of %s", s, RoleNames())
}

// inbox is the prefix of a role's reply subjects. Each role subscribes only under its own, so
// no user reads the answers another one was sent.
func (r Role) inbox() string { return "_INBOX." + string(r) }

// inboxPrefix is the connection option that makes replies to a user of role arrive where its
// permissions let it subscribe.
func inboxPrefix(r Role) nats.Option { return nats.CustomInboxPrefix(r.inbox()) }

// durable is a platform consumer: the stream it reads and its name.
type durable struct{ stream, name string }

// platformDurables are the durable consumers the services own. Nobody else may read, ack,
// change or delete them: that would take work or usage away from the service.
func platformDurables() []durable {
	return []durable{
		{events.StreamTenantCommands, events.ConsumerProvisioner},
		{events.StreamConvergeCommands, events.ConsumerConverger},
		{events.StreamTenantLifecycle, events.ConsumerConvergerTenants},
		{events.StreamDeadLetter, events.ConsumerConvergerDeadLetters},
		{events.StreamConvergeResults, events.ConsumerMeteringResults},
		{events.StreamTenantLifecycle, events.ConsumerMeteringLifecyle},
		{events.StreamTenantKeys, events.ConsumerAPIKeys},
		{events.StreamConvergeResults, events.ConsumerAPITaskEnds},
	}
}

// grant is what a service role may do, in the platform's terms.
type grant struct {
	publish   []string  // subjects it writes (events, commands, core messages)
	subscribe []string  // core subjects it listens on
	serve     []string  // request subjects it answers (queue groups), with one reply each
	call      []string  // request subjects it asks
	consumes  []durable // its durable consumers
	// inspects are consumers of other services whose state it may read.
	inspects []durable
	// streams: it answers some requests with a stream of messages (live logs), each to the
	// reply subject of a request it received, for as long as a day.
	streams bool
}

func grants() map[Role]grant {
	dl := events.DeadLetterSubject
	return map[Role]grant{
		API: {
			// The converge and destroy commands, relayed from its outbox.
			publish: []string{events.SubjectTenantDestroy, events.SubjectConvergeRequest, events.SubjectBudgetThreshold,
				dl(events.ConsumerAPIKeys), dl(events.ConsumerAPITaskEnds)},
			// A task's progress; a tenant's lifecycle, while a spawn or destroy waits for it.
			subscribe: []string{events.SubjectConvergeProgress, events.SubjectTenantLifecycle},
			// provisioner.> includes the control subjects of live log streams.
			call: []string{"provisioner.>", "converger.task.>", events.SubjectWebhookSecret, events.SubjectModelResolve, "metering.usage.>", events.SubjectPriceLookup, "metering.budget.>", "metering.invoice.>"},
			consumes: []durable{{events.StreamTenantKeys, events.ConsumerAPIKeys},
				{events.StreamConvergeResults, events.ConsumerAPITaskEnds}},
			// The converge backlog is the converger consumer's pending count.
			inspects: []durable{{events.StreamConvergeCommands, events.ConsumerConverger}},
		},
		Provisioner: {
			// The spawn command of a tenant it admitted, to its own work queue.
			publish:  []string{events.SubjectTenantSpawn, events.SubjectTenantLifecycle, events.SubjectTenantKeys, dl(events.ConsumerProvisioner)},
			serve:    []string{"provisioner.>"},
			streams:  true,
			consumes: []durable{{events.StreamTenantCommands, events.ConsumerProvisioner}},
		},
		Converger: {
			// Only the converger reports finished tasks, and with them the usage that is billed.
			publish: []string{events.SubjectConvergeCompleted, events.SubjectConvergeFailed, events.SubjectConvergeProgress,
				events.SubjectConvergeCancel, dl(events.ConsumerConverger), dl(events.ConsumerConvergerTenants),
				dl(events.ConsumerConvergerDeadLetters), dl(events.ConsumerConvergerBudgetAlerts)},
			subscribe: []string{events.SubjectConvergeCancel},
			serve:     []string{"converger.>"},
			consumes: []durable{{events.StreamConvergeCommands, events.ConsumerConverger},
				{events.StreamTenantLifecycle, events.ConsumerConvergerTenants},
				{events.StreamDeadLetter, events.ConsumerConvergerDeadLetters},
				{events.StreamBilling, events.ConsumerConvergerBudgetAlerts}},
		},
		Metering: {
			// The usage the ledger recorded, relayed from its outbox.
			publish: []string{events.SubjectUsageRecorded, dl(events.ConsumerMeteringResults), dl(events.ConsumerMeteringLifecyle)},
			serve:   []string{"metering.>"},
			call:    []string{events.SubjectTasksFinished, events.SubjectTasksKnown},
			consumes: []durable{{events.StreamConvergeResults, events.ConsumerMeteringResults},
				{events.StreamTenantLifecycle, events.ConsumerMeteringLifecyle}},
		},
	}
}

// integratorStreams are the fact streams an integrator may read.
func integratorStreams() []string {
	return []string{events.StreamTenantLifecycle, events.StreamConvergeResults, events.StreamBilling}
}

// permissions returns the NATS permissions of role.
func permissions(role Role) (jwt.Permissions, error) {
	var p jwt.Permissions
	switch role {
	case Admin:
		p.Pub.Allow.Add(">")
		p.Sub.Allow.Add(">")
		return p, nil
	case Integrator:
		p.Sub.Allow.Add(events.SubjectTenantLifecycle, events.SubjectConvergeCompleted, events.SubjectConvergeFailed, events.SubjectBudgetThreshold,
			events.SubjectUsageRecorded, role.inbox()+".>")
		p.Pub.Allow.Add("$JS.API.INFO")
		for _, s := range integratorStreams() {
			// Its own consumers, named or durable, on the fact streams. The legacy ephemeral
			// create ($JS.API.CONSUMER.CREATE.<stream>) is not allowed: it takes the consumer's
			// name from the request body, past the denials below.
			p.Pub.Allow.Add("$JS.API.STREAM.INFO."+s, "$JS.API.STREAM.MSG.GET."+s,
				"$JS.API.CONSUMER.LIST."+s, "$JS.API.CONSUMER.NAMES."+s,
				"$JS.API.CONSUMER.*."+s+".*", "$JS.API.CONSUMER.*."+s+".*.>", "$JS.API.CONSUMER.*.*."+s+".*",
				"$JS.ACK."+s+".>")
		}
		for _, d := range platformDurables() {
			if slices.Contains(integratorStreams(), d.stream) {
				p.Pub.Deny.Add(consumerSubjects(d)...)
			}
		}
		return p, nil
	}
	g, ok := grants()[role]
	if !ok {
		return p, fmt.Errorf("no permissions for nats role %q", role)
	}
	p.Pub.Allow.Add(g.publish...)
	for _, subject := range g.publish {
		// A publisher reads the stream's settings (the outbox relay, whether it takes atomic
		// batches).
		if stream, ok := events.StreamFor(subject); ok {
			p.Pub.Allow.Add("$JS.API.STREAM.INFO." + stream)
		}
	}
	p.Pub.Allow.Add(g.call...)
	p.Pub.Allow.Add("$JS.API.INFO")
	p.Sub.Allow.Add(g.subscribe...)
	p.Sub.Allow.Add(g.serve...)
	p.Sub.Allow.Add(role.inbox() + ".>")
	for _, d := range g.consumes {
		p.Pub.Allow.Add(consumerSubjects(d)...)
		p.Pub.Allow.Add("$JS.API.STREAM.INFO." + d.stream)
	}
	for _, d := range g.inspects {
		p.Pub.Allow.Add("$JS.API.CONSUMER.INFO." + d.stream + "." + d.name)
	}
	switch {
	case g.streams:
		p.Resp = &jwt.ResponsePermission{MaxMsgs: -1, Expires: 24 * time.Hour}
	case len(g.serve) > 0:
		p.Resp = &jwt.ResponsePermission{MaxMsgs: 1}
	}
	return p, nil
}

// consumerSubjects are the JetStream API subjects that create, read, inspect, ack, change or
// delete durable consumer d.
func consumerSubjects(d durable) []string {
	s, n := d.stream, d.name
	return []string{
		"$JS.API.CONSUMER.*." + s + "." + n,        // CREATE, INFO, DELETE
		"$JS.API.CONSUMER.*." + s + "." + n + ".>", // CREATE with a filter
		"$JS.API.CONSUMER.*.*." + s + "." + n,      // DURABLE.CREATE, MSG.NEXT
		"$JS.ACK." + s + "." + n + ".>",
	}
}

// FileOptions returns the role of the user in credentials file path, as it was issued here,
// and the options that connect as that user (with the role's inbox prefix).
func FileOptions(path string) (Role, []nats.Option, error) {
	uc, err := userClaims(path)
	if err != nil {
		return "", nil, err
	}
	for _, tag := range uc.Tags {
		if name, ok := strings.CutPrefix(tag, "role:"); ok {
			if role, err := ParseRole(name); err == nil {
				return role, []nats.Option{nats.UserCredentials(path), inboxPrefix(role)}, nil
			}
		}
	}
	return "", nil, fmt.Errorf("nats credentials %s were not issued by `convergence nats creds` (no role tag)", path)
}
