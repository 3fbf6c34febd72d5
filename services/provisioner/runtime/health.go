package runtime

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/filters"
)

// Health probing: the first retry comes quickly because a static Go app is usually up within
// tens of milliseconds; later ones back off, but only to 50 ms: a probe is one local HTTP
// request, and a longer pause would add up to its length to every spawn.
const (
	healthFirstDelay   = 10 * time.Millisecond
	healthMaxDelay     = 50 * time.Millisecond
	healthProbeTimeout = 2 * time.Second
	// healthInspectEvery spaces the inspections between failed probes that catch a crashed
	// container: often enough to fail fast, rarely enough not to load a busy engine with one
	// call per probe.
	healthInspectEvery = 200 * time.Millisecond
	exitLogHead        = 8   // a crash usually says why first (a Go panic, a failed listen)
	exitLogTail        = 12  // and what it did last
	exitLogMaxLines    = 500 // read at most this many lines of logs
)

// WaitHealthy blocks until GET /health on hostPort answers 200, probing from outside the
// container.
// The probe goes to the configured host IP (127.0.0.1 when tenants publish on all
// interfaces), from outside the container, so it also proves the port is published. Between
// failed probes it inspects the container (at most every 200 ms) and returns an [*ExitError]
// as soon as the container has exited, is restarting, or was restarted since the wait began; it wraps [ErrNotFound] when
// the container disappears. Otherwise it returns when ctx is done, saying what the last
// probe saw.
func (d *Docker) WaitHealthy(ctx context.Context, envID int64, hostPort int) error {
	restarts := -1
	return d.pollHealth(ctx, d.healthURL(hostPort), func(ctx context.Context) error {
		c, err := d.inspect(ctx, envID)
		if err != nil {
			return err
		}
		if restarts < 0 {
			restarts = c.RestartCount
		}
		if s := c.State; s.Status == container.StateExited || s.Status == container.StateDead ||
			s.Restarting || c.RestartCount > restarts {
			return d.exitError(ctx, c)
		}
		return nil
	})
}

// pollHealth GETs url, with pauses that grow from healthFirstDelay to healthMaxDelay, until it
// answers 200 (nil) or ctx is done (an error saying what the last probe saw). After a failed
// probe, at most every healthInspectEvery, it asks check about the tenant: an [*ExitError]
// from check ends the wait as it is, another error wrapped with url; an error that only says
// ctx is done leaves the deadline to be reported.
func (d *Docker) pollHealth(ctx context.Context, url string, check func(context.Context) error) error {
	delay := healthFirstDelay
	timer := time.NewTimer(0)
	defer timer.Stop()
	var inspected time.Time
	last := "no probe yet"
	for {
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for %s: %w (last probe: %s)", url, context.Cause(ctx), last)
		case <-timer.C:
		}
		probe := d.probe(ctx, url)
		if probe == "" {
			return nil
		}
		if ctx.Err() == nil || last == "no probe yet" {
			last = probe // A probe the deadline cut short says less than the one before it.
		}
		if time.Since(inspected) >= healthInspectEvery {
			inspected = time.Now()
			if err := check(ctx); err != nil {
				if exit := (*ExitError)(nil); errors.As(err, &exit) {
					return err
				}
				if ctx.Err() == nil {
					return fmt.Errorf("wait for %s: %w", url, err)
				}
			}
		}
		timer.Reset(delay)
		delay = min(delay*2, healthMaxDelay)
	}
}

// Probe GETs /health on hostPort once, from outside the container, and returns nil when it
// answers 200, or an error saying what it saw instead.
func (d *Docker) Probe(ctx context.Context, hostPort int) error {
	url := d.healthURL(hostPort)
	if last := d.probe(ctx, url); last != "" {
		return fmt.Errorf("GET %s: %s", url, last)
	}
	return nil
}

// probe GETs url once and returns "" on 200, or what it saw instead.
func (d *Docker) probe(ctx context.Context, url string) string {
	ctx, cancel := context.WithTimeout(ctx, healthProbeTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err.Error()
	}
	resp, err := d.health.Do(req)
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	// Drain a little so the server sees a clean close; the body itself does not matter.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
	if resp.StatusCode != http.StatusOK {
		return "status " + resp.Status
	}
	return ""
}

// exitError describes a container that stopped, with the first and last lines its last run
// wrote. It reads the logs even when ctx is done, under its own short deadline, because the
// reason matters most then.
func (d *Docker) exitError(ctx context.Context, c container.InspectResponse) error {
	e := &ExitError{
		Container:    strings.TrimPrefix(c.Name, "/"),
		ExitCode:     c.State.ExitCode,
		OOMKilled:    c.State.OOMKilled,
		RestartCount: c.RestartCount,
		EngineError:  c.State.Error,
	}
	lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if c.State.Running || c.State.Restarting {
		// The restart policy already started it again, which reset the exit code and OOM
		// flag in its state; the engine's event log still has them.
		if code, oom, err := d.lastExit(lctx, c); err == nil {
			e.ExitCode, e.OOMKilled = code, oom
		} else {
			d.log.Warn("read exit code from engine events", "container", e.Container, "err", err)
		}
	}
	o := container.LogsOptions{Tail: strconv.Itoa(exitLogMaxLines)}
	if !c.State.Running && !c.State.Restarting {
		// Only the run that just ended. A restarted container's current run has barely
		// begun, so it gets the tail of all its runs instead (in a crash loop, alike).
		o.Since = c.State.StartedAt
	}
	e.LastLogs = lastLogs(d.readLogs(lctx, c.ID, o))
	return e
}

// lastLogs is an ExitError's LastLogs: the first and last lines of logs, or why there are none.
func lastLogs(logs []byte, err error) string {
	if err != nil {
		return "(logs unavailable: " + err.Error() + ")"
	}
	return excerpt(string(logs), exitLogHead, exitLogTail)
}

// lastExit reads the exit code of the container's last exit, and whether the kernel killed
// it for memory, from the engine's events since the container was created.
func (d *Docker) lastExit(ctx context.Context, c container.InspectResponse) (code int, oom bool, err error) {
	f := filters.NewArgs(
		filters.Arg("type", string(events.ContainerEventType)),
		filters.Arg("container", c.ID),
		filters.Arg("event", string(events.ActionOOM)),
		filters.Arg("event", string(events.ActionDie)),
	)
	now := time.Now()
	msgs, errs := d.cli.Events(ctx, events.ListOptions{
		Since:   c.Created,
		Until:   fmt.Sprintf("%d.%09d", now.Unix(), now.Nanosecond()),
		Filters: f,
	})
	pendingOOM := false
	for {
		select {
		case m := <-msgs:
			switch m.Action {
			case events.ActionOOM:
				pendingOOM = true
			case events.ActionDie:
				code, _ = strconv.Atoi(m.Actor.Attributes["exitCode"])
				oom, pendingOOM = pendingOOM, false
			}
		case err := <-errs:
			// With Until set, the engine ends the stream after the last event.
			if err == nil || errors.Is(err, io.EOF) {
				return code, oom, nil
			}
			return 0, false, fmt.Errorf("container events: %w", err)
		}
	}
}

// excerpt keeps the first head and last tail lines of s, marking what it left out.
func excerpt(s string, head, tail int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) <= head+tail {
		return strings.Join(lines, "\n")
	}
	out := slices.Concat(lines[:head], []string{fmt.Sprintf("[... %d lines ...]", len(lines)-head-tail)}, lines[len(lines)-tail:])
	return strings.Join(out, "\n")
}
