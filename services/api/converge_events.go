package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/nats-io/nats.go"

	"github.com/convergence-dev/convergence/internal/httpx"
	"github.com/convergence-dev/convergence/pkg/events"
)

// keepAliveInterval is how often an idle progress stream sends a comment, so proxies and
// clients do not take it for dead.
const keepAliveInterval = 15 * time.Second

// events answers GET /api/v1/converge/:taskId/events with a Server-Sent Events stream:
//
//	event: round      one per round, in order; id is the round number; data is the round
//	event: result     once, when the task has finished; data is the task without its transcript
//
// A client that connects late first gets the rounds so far from the record, then the live
// ones; one that reconnects with Last-Event-ID gets the rounds after it. The stream ends after
// the result, when the client goes away, or when the server shuts down (the client reconnects
// with Last-Event-ID).
//
// Live rounds come from the converger's core-NATS progress events. Those are at most once, so
// the stream fills any gap from the record, and reads it every pollInterval too.
func (h *convergeAPI) events(c echo.Context) error {
	id, err := taskParam(c)
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	envID := tenantOf(c).EnvID
	release, err := h.streams.take(envID)
	if err != nil {
		return err
	}
	defer release()
	if _, err := h.state(ctx, envID, id, events.TaskQuery{}); err != nil {
		return err
	}
	last := 0
	if v := c.Request().Header.Get("Last-Event-ID"); v != "" {
		if n, err := strconv.Atoi(v); err == nil && n > 0 {
			last = n
		}
	}
	// Subscribed before the record is read, so no round falls between the two.
	live := make(chan *nats.Msg, 64)
	sub, err := h.s.deps.NC.ChanSubscribe(events.ProgressSubject(id), live)
	if err != nil {
		return httpx.Unavailable("the message bus")
	}
	defer func() { _ = sub.Unsubscribe() }()

	st := openEventStream(c.Response())
	st.last = last
	st.write("retry: 2000\n\n")

	// catchUp sends the rounds after the last one sent, and says whether the task has ended;
	// its state is then the result.
	var state events.TaskState
	catchUp := func() (finished bool, err error) {
		state, err = h.state(ctx, envID, id, events.TaskQuery{Rounds: true, RoundsAfter: st.last})
		if err != nil {
			return false, err
		}
		for _, r := range state.Rounds {
			st.round(r.Number, r.View)
		}
		return state.Finished(), nil
	}
	finish := func() error {
		if _, err := catchUp(); err != nil {
			return err
		}
		st.event("result", "", state.Task)
		return st.err
	}

	if done, err := catchUp(); err != nil || done {
		if err != nil {
			return st.fail(err)
		}
		return st.fail(finish())
	}
	poll := time.NewTicker(pollInterval)
	defer poll.Stop()
	keepAlive := time.NewTicker(keepAliveInterval)
	defer keepAlive.Stop()
	for st.err == nil {
		select {
		case <-ctx.Done():
			return nil
		case <-httpx.Draining(ctx):
			return nil
		case msg := <-live:
			p, err := events.DecodeProgress(msg.Data)
			if err != nil {
				continue
			}
			switch p.Kind {
			case events.ProgressRound:
				var r struct {
					Round int `json:"round"`
				}
				if json.Unmarshal(p.Round, &r) != nil || r.Round <= st.last {
					continue
				}
				if r.Round == st.last+1 {
					st.round(r.Round, p.Round)
					continue
				}
				if _, err := catchUp(); err != nil { // A message was lost: fill the gap.
					return st.fail(err)
				}
			case events.ProgressFinished:
				return st.fail(finish())
			}
		case <-poll.C:
			done, err := catchUp()
			if err != nil {
				return st.fail(err)
			}
			if done {
				return st.fail(finish())
			}
		case <-keepAlive.C:
			st.write(": keep-alive\n\n")
		}
	}
	return nil
}

// stream writes Server-Sent Events. After the first write error (the client went away) it
// writes nothing more.
type stream struct {
	w    *echo.Response
	last int // the number of the last round sent
	err  error
}

// openEventStream answers 200 with a Server-Sent Events stream on w.
func openEventStream(w *echo.Response) *stream {
	w.Header().Set(echo.HeaderContentType, "text/event-stream")
	w.Header().Set(echo.HeaderCacheControl, "no-cache")
	w.Header().Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream
	w.WriteHeader(http.StatusOK)
	return &stream{w: w}
}

// write sends text and flushes it; after a failed write it sends nothing more.
func (s *stream) write(text string) {
	if s.err != nil {
		return
	}
	if _, s.err = io.WriteString(s.w, text); s.err == nil {
		s.w.Flush()
	}
}

func (s *stream) round(n int, view json.RawMessage) {
	if n <= s.last {
		return
	}
	s.event("round", strconv.Itoa(n), view)
	s.last = n
}

// event writes one event; data is JSON (a json.RawMessage is written as it is).
func (s *stream) event(name, id string, data any) {
	raw, ok := data.(json.RawMessage)
	if !ok {
		var err error
		if raw, err = json.Marshal(data); err != nil {
			s.err = err
			return
		}
	}
	msg := "event: " + name + "\n"
	if id != "" {
		msg += "id: " + id + "\n"
	}
	// JSON from json.Marshal, or as stored in JSONB, has no raw newlines: one data line.
	s.write(msg + "data: " + string(raw) + "\n\n")
}

// fail ends the stream after err. The status is sent already, so an error can only be logged
// by the caller's error handler, and the client told with a last event.
func (s *stream) fail(err error) error {
	if err == nil || s.err != nil || errors.Is(err, context.Canceled) {
		return nil
	}
	s.event("error", "", map[string]string{"message": "the progress stream failed; reconnect to resume it"})
	return fmt.Errorf("progress stream: %w", err)
}
