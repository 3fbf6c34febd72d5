// Package natsrpc is request/reply between services over core NATS, for the questions one
// service must answer another at once: a usage summary, a task's state, a tenant's admission.
// Requests and answers are JSON. Every replica of the answering service subscribes in one
// queue group, so any one of them answers; a handler's failure travels back as an [Error] with
// a code the asker maps (to an HTTP status, say), never as the handler's own words unless it
// chose them.
package natsrpc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// Error codes.
const (
	CodeInvalid     = "invalid"     // the request is wrong; Message says how
	CodeNotFound    = "not_found"   // what it names does not exist, or not for the asker
	CodeConflict    = "conflict"    // it clashes with what exists
	CodeUnavailable = "unavailable" // no replica answered, or a dependency is down
	CodeInternal    = "internal"    // the answerer failed; its log says why
)

// Error is a failed request's answer. Reason, when set, names the case within the code for a
// caller that answers it differently (a quota against a name clash, say).
type Error struct {
	Code    string `json:"code"`
	Reason  string `json:"reason,omitempty"`
	Message string `json:"message"`
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

// Errorf returns an Error with code and a message for whoever made the request.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// ErrUnavailable means no replica answered in time.
var ErrUnavailable = &Error{Code: CodeUnavailable, Message: "no replica answered"}

// IsCode reports whether err is an Error with code.
func IsCode(err error, code string) bool {
	var e *Error
	return errors.As(err, &e) && e.Code == code
}

// reply is the wire form of an answer: Result, or Error.
type reply[T any] struct {
	Result *T     `json:"result,omitempty"`
	Error  *Error `json:"error,omitempty"`
}

// DefaultTimeout bounds a Call whose context has no deadline.
const DefaultTimeout = 10 * time.Second

// Call sends req on subject and returns the answer. It returns an *Error: the answerer's, or
// ErrUnavailable when nobody answered before ctx ended (DefaultTimeout without a deadline).
func Call[Req, Resp any](ctx context.Context, nc *nats.Conn, subject string, req Req) (Resp, error) {
	var zero Resp
	data, err := json.Marshal(req)
	if err != nil {
		return zero, fmt.Errorf("encode %s request: %w", subject, err)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultTimeout)
		defer cancel()
	}
	m, err := nc.RequestWithContext(ctx, subject, data)
	switch {
	case errors.Is(err, nats.ErrNoResponders), errors.Is(err, context.DeadlineExceeded):
		return zero, ErrUnavailable
	case err != nil:
		return zero, fmt.Errorf("%s: %w", subject, err)
	}
	var r reply[Resp]
	if err := json.Unmarshal(m.Data, &r); err != nil {
		return zero, fmt.Errorf("decode %s answer: %w", subject, err)
	}
	if r.Error != nil {
		return zero, r.Error
	}
	if r.Result == nil {
		return zero, fmt.Errorf("%s answered nothing", subject)
	}
	return *r.Result, nil
}

// maxInFlight bounds the requests a Server handles at once; more wait in NATS's buffer.
const maxInFlight = 64

// Server answers requests for one service. Register handlers with Handle, then Run.
type Server struct {
	nc       *nats.Conn
	queue    string
	log      *slog.Logger
	handlers map[string]func(context.Context, []byte) []byte
	sem      chan struct{}
	serving  chan struct{} // closed once the subscriptions are in place

	mu      sync.Mutex // orders the handlers' start against Run's end
	stopped bool       // Run is ending: no handler starts any more
	wg      sync.WaitGroup
}

// NewServer returns a server on nc whose subscriptions join queue group queue; it starts
// nothing.
func NewServer(nc *nats.Conn, queue string, log *slog.Logger) *Server {
	return &Server{nc: nc, queue: queue, log: log, handlers: map[string]func(context.Context, []byte) []byte{},
		sem: make(chan struct{}, maxInFlight), serving: make(chan struct{})}
}

// Handle makes s answer requests on subject with fn, each within timeout. A request that does
// not decode is answered CodeInvalid; an error from fn that is not an *Error is logged and
// answered CodeInternal. Call it before Run.
func Handle[Req, Resp any](s *Server, subject string, timeout time.Duration, fn func(context.Context, Req) (Resp, error)) {
	s.handlers[subject] = func(ctx context.Context, data []byte) []byte {
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		var r reply[Resp]
		var req Req
		if err := json.Unmarshal(data, &req); err != nil {
			r.Error = Errorf(CodeInvalid, "the request does not decode: %v", err)
		} else if resp, err := fn(ctx, req); err != nil {
			if !errors.As(err, &r.Error) {
				s.log.ErrorContext(ctx, "request failed", "subject", subject, "err", err)
				r.Error = Errorf(CodeInternal, "%s failed; the answering service's log says why", subject)
			}
		} else {
			r.Result = &resp
		}
		out, err := json.Marshal(r)
		if err != nil {
			s.log.ErrorContext(ctx, "encode answer", "subject", subject, "err", err)
			out, _ = json.Marshal(reply[Resp]{Error: Errorf(CodeInternal, "the answer did not encode")})
		}
		return out
	}
}

// Run subscribes to every handled subject and serves until ctx is done; then it unsubscribes
// and returns once every request it took is answered. Handlers get a context that ends with
// ctx.
func (s *Server) Run(ctx context.Context) error {
	defer func() {
		s.mu.Lock()
		s.stopped = true
		s.mu.Unlock()
		s.wg.Wait()
	}()
	for subject, handle := range s.handlers {
		sub, err := s.nc.QueueSubscribe(subject, s.queue, func(m *nats.Msg) { s.serve(ctx, m, handle) })
		if err != nil {
			return fmt.Errorf("subscribe %s: %w", subject, err)
		}
		defer func() { _ = sub.Unsubscribe() }()
	}
	// The server must know the subscriptions before the service counts as serving.
	fctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	err := s.nc.FlushWithContext(fctx)
	cancel()
	if err != nil && ctx.Err() == nil {
		return fmt.Errorf("flush subscriptions: %w", err)
	}
	close(s.serving)
	<-ctx.Done()
	return nil
}

// Serving reports whether Run has its subscriptions in place, for a service's readiness.
func (s *Server) Serving() error {
	select {
	case <-s.serving:
		return nil
	default:
		return errors.New("not yet answering on the bus")
	}
}

// serve answers m in a goroutine of its own, once a place among maxInFlight is free.
func (s *Server) serve(ctx context.Context, m *nats.Msg, handle func(context.Context, []byte) []byte) {
	if m.Reply == "" {
		return // Nobody to answer.
	}
	select {
	case s.sem <- struct{}{}:
	case <-ctx.Done():
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		<-s.sem
		return
	}
	s.wg.Go(func() {
		defer func() { <-s.sem }()
		if err := m.Respond(handle(ctx, m.Data)); err != nil && ctx.Err() == nil {
			s.log.Warn("answer request", "subject", m.Subject, "err", err)
		}
	})
}
