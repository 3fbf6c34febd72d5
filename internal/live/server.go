package live

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"
)

// Source is what the server reads: the engine a tenant's container runs on, through the
// provisioner.
type Source interface {
	// Status is the tenant's container state.
	Status(ctx context.Context, envID int64) (Status, error)
	// Logs reads the container's output as req selects (its EnvID is envID); it wraps
	// ErrNotFound when the tenant has no container.
	Logs(ctx context.Context, envID int64, req LogsRequest) (io.ReadCloser, error)
}

// Limits of the server.
const (
	// maxInFlight bounds the requests served at once; more wait in NATS's buffer.
	maxInFlight = 64
	// statusTimeout bounds one status read (a stats sample takes about a second).
	statusTimeout = 10 * time.Second
	// readTimeout bounds a log read that does not follow.
	readTimeout = time.Minute
)

// Server answers status and log requests from a [Source].
type Server struct {
	nc  *nats.Conn
	src Source
	log *slog.Logger
	sem chan struct{}
	wg  sync.WaitGroup
}

// NewServer returns a server for src on nc; it starts nothing.
func NewServer(nc *nats.Conn, src Source, log *slog.Logger) *Server {
	return &Server{nc: nc, src: src, log: log.With("component", "live"), sem: make(chan struct{}, maxInFlight)}
}

// Run serves until ctx is done, then unsubscribes, ends the streams in flight (their end
// message says the provisioner is stopping) and returns nil once every request it took is
// finished.
func (s *Server) Run(ctx context.Context) error {
	defer s.wg.Wait()
	var subs []*nats.Subscription
	defer func() {
		for _, sub := range subs {
			_ = sub.Unsubscribe()
		}
	}()
	for subject, handle := range map[string]func(context.Context, *nats.Msg){
		SubjectStatus: s.status,
		SubjectLogs:   s.logs,
	} {
		sub, err := s.nc.QueueSubscribe(subject, queueGroup, func(m *nats.Msg) { s.spawn(ctx, m, handle) })
		if err != nil {
			return fmt.Errorf("subscribe %s: %w", subject, err)
		}
		subs = append(subs, sub)
	}
	// Make sure the server knows the subscriptions before Run counts as serving.
	fctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	err := s.nc.FlushWithContext(fctx)
	cancel()
	if err != nil && ctx.Err() == nil {
		return fmt.Errorf("flush subscriptions: %w", err)
	}
	<-ctx.Done()
	return nil
}

// spawn handles m on a goroutine of its own, so a slow request does not hold up the others.
func (s *Server) spawn(ctx context.Context, m *nats.Msg, handle func(context.Context, *nats.Msg)) {
	if ctx.Err() != nil {
		return
	}
	select {
	case s.sem <- struct{}{}:
	case <-ctx.Done():
		return
	}
	s.wg.Go(func() {
		defer func() { <-s.sem }()
		handle(ctx, m)
	})
}

func (s *Server) status(ctx context.Context, m *nats.Msg) {
	var req StatusRequest
	reply := statusReply{}
	if err := json.Unmarshal(m.Data, &req); err != nil || req.EnvID <= 0 {
		reply.Code, reply.Error = codeInvalid, "status request needs a positive envId"
	} else {
		ctx, cancel := context.WithTimeout(ctx, statusTimeout)
		st, err := s.src.Status(ctx, req.EnvID)
		cancel()
		if err != nil {
			s.log.Warn("live status", "envId", req.EnvID, "err", err)
			reply.Code, reply.Error = codeInternal, err.Error()
		} else {
			reply.Status = &st
		}
	}
	b, err := json.Marshal(reply)
	if err != nil {
		return // A statusReply always encodes.
	}
	if err := m.Respond(b); err != nil {
		s.log.Warn("respond to status request", "err", err)
	}
}

// logs streams one tenant's logs to the request's reply inbox.
func (s *Server) logs(ctx context.Context, m *nats.Msg) {
	if m.Reply == "" {
		return
	}
	out := &sender{nc: s.nc, to: m.Reply}
	var req LogsRequest
	if err := json.Unmarshal(m.Data, &req); err != nil || req.EnvID <= 0 || req.Tail < 0 {
		out.end(codeInvalid, "logs request needs a positive envId and a tail of zero or more")
		return
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	if !req.Follow {
		var stop context.CancelFunc
		ctx, stop = context.WithTimeout(ctx, readTimeout)
		defer stop()
	}

	rc, err := s.src.Logs(ctx, req.EnvID, req)
	if err != nil {
		if errors.Is(err, ErrNotFound) {
			out.end(codeNotFound, ErrNotFound.Error())
			return
		}
		s.log.Warn("live logs", "envId", req.EnvID, "err", err)
		out.end(codeInternal, err.Error())
		return
	}
	// Closing the reader is what unblocks a Read waiting for the next line.
	stopRead := context.AfterFunc(ctx, func() { _ = rc.Close() })
	defer stopRead()
	defer rc.Close()

	// The client's control messages: alive keeps a following stream going, stop ends it.
	var lastAlive atomic.Int64
	lastAlive.Store(time.Now().UnixNano())
	control := controlPrefix + nuid.Next()
	ctl, err := s.nc.Subscribe(control, func(cm *nats.Msg) {
		switch string(cm.Data) {
		case ctlStop:
			cancel(errClientLeft)
		default:
			lastAlive.Store(time.Now().UnixNano())
		}
	})
	if err != nil {
		out.end(codeInternal, "subscribe control: "+err.Error())
		return
	}
	defer func() { _ = ctl.Unsubscribe() }()
	if err := out.start(control); err != nil {
		return
	}

	if req.Follow {
		go s.keepAlive(ctx, cancel, out, &lastAlive)
	}
	buf := make([]byte, chunkSize)
	for {
		n, rerr := rc.Read(buf)
		if n > 0 {
			if err := out.data(buf[:n]); err != nil {
				cancel(err)
				return
			}
		}
		if rerr == nil {
			continue
		}
		// A cancelled read ends with whatever error closing the reader caused, io.EOF
		// included, so the cause is checked first.
		switch cause := context.Cause(ctx); {
		case errors.Is(cause, errClientLeft), errors.Is(cause, errClientGone):
			// Nobody listens any more.
		case errors.Is(cause, context.Canceled):
			out.end(codeStopping, "the provisioner is stopping; reconnect")
		case cause != nil:
			out.end(codeInternal, "reading logs took too long")
		case errors.Is(rerr, io.EOF):
			out.end("", "")
		default:
			out.end(codeInternal, rerr.Error())
		}
		return
	}
}

var (
	errClientLeft = errors.New("client stopped the stream")
	errClientGone = errors.New("client stopped sending heartbeats")
)

// keepAlive pings the client every Heartbeat and ends the stream when the client has been
// silent for heartbeatLoss.
func (s *Server) keepAlive(ctx context.Context, cancel context.CancelCauseFunc, out *sender, lastAlive *atomic.Int64) {
	t := time.NewTicker(Heartbeat)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if time.Since(time.Unix(0, lastAlive.Load())) > heartbeatLoss {
				cancel(errClientGone)
				return
			}
			if err := out.ping(); err != nil {
				cancel(err)
				return
			}
		}
	}
}

// sender publishes the messages of one stream. Its methods may be called from two
// goroutines (the reader and the pinger).
type sender struct {
	nc  *nats.Conn
	to  string
	mu  sync.Mutex
	seq uint64
}

func (o *sender) publish(kind string, data []byte, set func(nats.Header)) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	m := &nats.Msg{Subject: o.to, Data: data, Header: nats.Header{}}
	m.Header.Set(hdrKind, kind)
	if kind == kindData {
		o.seq++
		m.Header.Set(hdrSeq, strconv.FormatUint(o.seq, 10))
	}
	if set != nil {
		set(m.Header)
	}
	return o.nc.PublishMsg(m)
}

func (o *sender) start(control string) error {
	return o.publish(kindStart, nil, func(h nats.Header) { h.Set(hdrControl, control) })
}

func (o *sender) data(b []byte) error { return o.publish(kindData, b, nil) }

func (o *sender) ping() error { return o.publish(kindPing, nil, nil) }

func (o *sender) end(code, msg string) {
	_ = o.publish(kindEnd, nil, func(h nats.Header) {
		if code != "" {
			h.Set(hdrCode, code)
			h.Set(hdrError, msg)
		}
	})
}
