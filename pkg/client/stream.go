package client

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Event is one event of a task's progress stream: a finished round, or the task's result.
type Event struct {
	// Type is "round" or "result".
	Type string
	// Round is set for a round event.
	Round *Round
	// Task is set for the result event: the finished task, without its transcript.
	Task *Task
}

// Stream calls fn for every round of the task, in order, then once with the result, and
// returns. Rounds that finished before the call are delivered first. A dropped connection is
// resumed where it left off (Last-Event-ID), up to a few times in a row. Stream returns fn's
// first error, or ctx's error as soon as ctx is done.
func (c *Client) Stream(ctx context.Context, taskID string, fn func(Event) error) error {
	last, failures := 0, 0
	for {
		done, progressed, err := c.streamOnce(ctx, taskID, &last, fn)
		if done || ctx.Err() != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return err
		}
		var fnErr handlerError
		if errors.As(err, &fnErr) {
			return fnErr.err
		}
		var apiErr *APIError
		if errors.As(err, &apiErr) {
			return err // The stream was refused (404, 401): reconnecting will not help.
		}
		if progressed {
			failures = 0
		}
		if failures++; failures > c.maxRetries {
			if err == nil {
				err = errors.New("stream ended before the result")
			}
			return fmt.Errorf("convergence: stream of task %s: %w", taskID, err)
		}
		t := time.NewTimer(time.Duration(failures) * 500 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

type handlerError struct{ err error }

func (e handlerError) Error() string { return e.err.Error() }

// streamOnce reads one connection of the stream, from the round after *last, and advances
// *last as rounds are delivered. done reports that the result was delivered.
func (c *Client) streamOnce(ctx context.Context, taskID string, last *int, fn func(Event) error) (done, progressed bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	path := "/api/v1/converge/" + url.PathEscape(taskID) + "/events"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base.String()+path, nil)
	if err != nil {
		return false, false, err
	}
	req.Header.Set("Authorization", "Bearer "+c.key())
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("X-Request-ID", newRequestID())
	req.Header.Set("User-Agent", c.userAgent)
	if *last > 0 {
		req.Header.Set("Last-Event-ID", strconv.Itoa(*last))
	}
	// The stream lasts as long as the task: the HTTP client's timeout must not cut it.
	h := *c.http
	h.Timeout = 0
	resp, err := h.Do(req)
	if err != nil {
		return false, false, err
	}
	if resp.StatusCode != http.StatusOK {
		apiErr, retryAfter, err := c.read(resp, nil)
		if err != nil {
			return false, false, err
		}
		return false, false, typed(apiErr, retryAfter)
	}
	defer resp.Body.Close()

	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	var name, id string
	var data strings.Builder
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if data.Len() == 0 {
				name, id = "", ""
				continue
			}
			ev, err := decodeEvent(name, data.String())
			data.Reset()
			if err != nil {
				return false, progressed, err
			}
			if ev.Type != "" {
				if err := fn(ev); err != nil {
					return false, progressed, handlerError{err}
				}
				progressed = true
				if n, err := strconv.Atoi(id); err == nil {
					*last = n
				}
				if ev.Type == "result" {
					return true, true, nil
				}
			}
			name, id = "", ""
		case strings.HasPrefix(line, ":"): // A comment: keep-alive.
		case strings.HasPrefix(line, "event:"):
			name = strings.TrimSpace(strings.TrimPrefix(line, "event:"))
		case strings.HasPrefix(line, "id:"):
			id = strings.TrimSpace(strings.TrimPrefix(line, "id:"))
		case strings.HasPrefix(line, "data:"):
			if data.Len() > 0 {
				data.WriteByte('\n')
			}
			data.WriteString(strings.TrimPrefix(strings.TrimPrefix(line, "data:"), " "))
		}
	}
	return false, progressed, sc.Err()
}

// decodeEvent decodes a round or result event; other event types are skipped.
func decodeEvent(name, data string) (Event, error) {
	switch name {
	case "round":
		var r Round
		if err := json.Unmarshal([]byte(data), &r); err != nil {
			return Event{}, fmt.Errorf("convergence: decode round event: %w", err)
		}
		return Event{Type: name, Round: &r}, nil
	case "result":
		var t Task
		if err := json.Unmarshal([]byte(data), &t); err != nil {
			return Event{}, fmt.Errorf("convergence: decode result event: %w", err)
		}
		return Event{Type: name, Task: &t}, nil
	}
	return Event{}, nil
}
