package runtime

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/docker/docker/api/types/events"
)

// swarmServiceNameLabel is the label swarm puts on a task's container naming its service.
const swarmServiceNameLabel = "com.docker.swarm.service.name"

// eventBuffer lets a slow consumer fall this many events behind before the stream waits.
const eventBuffer = 64

// Events streams lifecycle events of managed containers; see [Runtime.Events]. It
// subscribes to the engine's start, die, oom, health_status and destroy events for
// containers with this runtime's labels, so the engine does the filtering. One goroutine
// forwards them until ctx is done or the engine stream fails; it never outlives ctx. When
// Events returns, the subscription is in place: every later event is delivered.
func (d *Docker) Events(ctx context.Context) (<-chan Event, <-chan error) {
	f := d.labelFilters()
	f.Add("type", string(events.ContainerEventType))
	for _, a := range []events.Action{events.ActionStart, events.ActionDie, events.ActionOOM, events.ActionHealthStatus, events.ActionDestroy} {
		f.Add("event", string(a))
	}
	msgs, errs := d.cli.Events(ctx, events.ListOptions{Filters: f})

	out := make(chan Event, eventBuffer)
	outErr := make(chan error, 1)
	go func() {
		defer close(outErr)
		defer close(out)
		for {
			select {
			case <-ctx.Done():
				return
			case err, ok := <-errs:
				if ok && err != nil && ctx.Err() == nil {
					outErr <- fmt.Errorf("docker events: %w", err)
				}
				return
			case m := <-msgs:
				ev, ok := toEvent(m)
				if !ok || !managedBy(m.Actor.Attributes, d.cfg.Labels) {
					continue // another instance's, which the label filter cannot leave out
				}
				select {
				case out <- ev:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return out, outErr
}

// toEvent converts an engine event; ok is false for actions the runtime does not report.
func toEvent(m events.Message) (Event, bool) {
	attrs := m.Actor.Attributes
	ev := Event{
		EnvID:         labelInt(attrs, LabelEnvID),
		ContainerID:   m.Actor.ID,
		ContainerName: attrs["name"],
		Time:          time.Unix(0, m.TimeNano).UTC(),
	}
	if svc := attrs[swarmServiceNameLabel]; svc != "" {
		// A swarm task's container: the tenant is known by its service's name.
		ev.ContainerName = svc
	}
	if m.TimeNano == 0 {
		ev.Time = time.Unix(m.Time, 0).UTC()
	}
	action := string(m.Action)
	switch {
	case action == string(events.ActionStart):
		ev.Kind = EventStart
	case action == string(events.ActionDie):
		ev.Kind = EventDie
		ev.ExitCode, _ = strconv.Atoi(attrs["exitCode"])
	case action == string(events.ActionOOM):
		ev.Kind = EventOOM
	case action == string(events.ActionDestroy):
		ev.Kind = EventDestroy
	case strings.HasPrefix(action, string(events.ActionHealthStatus)):
		ev.Kind = EventHealth
		ev.Health = Health(strings.TrimSpace(strings.TrimPrefix(action, string(events.ActionHealthStatus)+":")))
	default:
		return Event{}, false
	}
	return ev, true
}
