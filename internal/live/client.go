package live

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// DefaultTimeout bounds a status request and the wait for a log stream to start.
const DefaultTimeout = 5 * time.Second

// Client asks the provisioner for live state; the API uses it. It is safe for concurrent use.
type Client struct {
	nc      *nats.Conn
	timeout time.Duration
}

// NewClient returns a client on nc. A zero timeout means [DefaultTimeout].
func NewClient(nc *nats.Conn, timeout time.Duration) *Client {
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	return &Client{nc: nc, timeout: timeout}
}

// Status returns the tenant's live container state. It wraps [ErrUnavailable] when no
// provisioner answers within the client's timeout.
func (c *Client) Status(ctx context.Context, envID int64) (Status, error) {
	req, err := json.Marshal(StatusRequest{EnvID: envID})
	if err != nil {
		return Status{}, fmt.Errorf("encode status request: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	m, err := c.nc.RequestWithContext(ctx, SubjectStatus, req)
	if err != nil {
		if errors.Is(err, nats.ErrNoResponders) || errors.Is(err, context.DeadlineExceeded) {
			return Status{}, fmt.Errorf("live status of tenant %d: %w", envID, ErrUnavailable)
		}
		return Status{}, fmt.Errorf("live status of tenant %d: %w", envID, err)
	}
	var reply statusReply
	if err := json.Unmarshal(m.Data, &reply); err != nil {
		return Status{}, fmt.Errorf("decode live status: %w", err)
	}
	if reply.Status == nil {
		return Status{}, fmt.Errorf("live status of tenant %d: %s", envID, reply.Error)
	}
	return *reply.Status, nil
}

// Logs starts a log stream. The caller reads it to its end (io.EOF once the logs are
// complete or, when following, the container stopped) and must Close it; Close tells the
// provisioner to stop. The stream ends with an error wrapping [ErrDataLost] when chunks were
// lost, and [ErrUnavailable] when the provisioner stops answering. Logs itself wraps
// [ErrUnavailable] when no provisioner answers, and [ErrNotFound] when the tenant has no
// container. ctx bounds the whole stream.
func (c *Client) Logs(ctx context.Context, req LogsRequest) (*LogStream, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("encode logs request: %w", err)
	}
	inbox := c.nc.NewRespInbox()
	sub, err := c.nc.SubscribeSync(inbox)
	if err != nil {
		return nil, fmt.Errorf("subscribe log inbox: %w", err)
	}
	s := &LogStream{nc: c.nc, sub: sub, ctx: ctx, follow: req.Follow, done: make(chan struct{})}
	if err := c.nc.PublishMsg(&nats.Msg{Subject: SubjectLogs, Reply: inbox, Data: body}); err != nil {
		_ = sub.Unsubscribe()
		return nil, fmt.Errorf("request logs: %w", err)
	}
	first, err := s.next(c.timeout)
	if err != nil {
		_ = sub.Unsubscribe()
		return nil, err
	}
	switch first.Header.Get(hdrKind) {
	case kindStart:
	case kindEnd:
		_ = sub.Unsubscribe()
		return nil, endError(first)
	default:
		_ = sub.Unsubscribe()
		return nil, fmt.Errorf("log stream of tenant %d: unexpected %q message first", req.EnvID, first.Header.Get(hdrKind))
	}
	s.control = first.Header.Get(hdrControl)
	if s.follow {
		s.wg.Go(s.heartbeat)
	}
	return s, nil
}

// LogStream is one tenant's log output, read from the provisioner. Read and Close may not be
// called concurrently with Read.
type LogStream struct {
	nc      *nats.Conn
	sub     *nats.Subscription
	ctx     context.Context
	follow  bool
	control string
	seq     uint64
	pending []byte
	err     error // sticky: the stream's end

	closeOnce sync.Once
	done      chan struct{}
	wg        sync.WaitGroup
}

// next waits for the next message, at most wait.
func (s *LogStream) next(wait time.Duration) (*nats.Msg, error) {
	ctx, cancel := context.WithTimeout(s.ctx, wait)
	defer cancel()
	m, err := s.sub.NextMsgWithContext(ctx)
	switch {
	case err == nil && m.Header.Get("Status") == "503":
		return nil, ErrUnavailable // NATS answers a request nobody subscribes to with 503.
	case err == nil:
		return m, nil
	case errors.Is(err, nats.ErrNoResponders):
		return nil, ErrUnavailable
	case s.ctx.Err() != nil:
		return nil, s.ctx.Err()
	case errors.Is(err, context.DeadlineExceeded):
		return nil, ErrUnavailable
	default:
		return nil, fmt.Errorf("read log stream: %w", err)
	}
}

// Read reads log bytes.
func (s *LogStream) Read(p []byte) (int, error) {
	for len(s.pending) == 0 {
		if s.err != nil {
			return 0, s.err
		}
		// A following stream hears a ping every Heartbeat; one that does not follow only
		// waits for its data, which the provisioner bounds itself.
		wait := heartbeatLoss
		if !s.follow {
			wait = readTimeout + DefaultTimeout
		}
		m, err := s.next(wait)
		if err != nil {
			s.err = err
			return 0, err
		}
		switch m.Header.Get(hdrKind) {
		case kindData:
			seq, _ := strconv.ParseUint(m.Header.Get(hdrSeq), 10, 64)
			if seq != s.seq+1 {
				s.err = fmt.Errorf("%w: chunk %d arrived after chunk %d", ErrDataLost, seq, s.seq)
				return 0, s.err
			}
			s.seq = seq
			s.pending = m.Data
		case kindEnd:
			s.err = endError(m)
		}
	}
	n := copy(p, s.pending)
	s.pending = s.pending[n:]
	return n, nil
}

// heartbeat tells the provisioner every Heartbeat that the reader is still there.
func (s *LogStream) heartbeat() {
	t := time.NewTicker(Heartbeat)
	defer t.Stop()
	for {
		select {
		case <-s.done:
			return
		case <-t.C:
			_ = s.nc.Publish(s.control, []byte(ctlAlive))
		}
	}
}

// Close tells the provisioner to stop and releases the stream. It is safe to call more than
// once.
func (s *LogStream) Close() error {
	s.closeOnce.Do(func() {
		close(s.done)
		s.wg.Wait()
		if s.control != "" {
			_ = s.nc.Publish(s.control, []byte(ctlStop))
		}
		_ = s.sub.Unsubscribe()
	})
	return nil
}

// endError turns an end message into io.EOF, or the error it carries.
func endError(m *nats.Msg) error {
	switch m.Header.Get(hdrCode) {
	case "":
		return io.EOF
	case codeNotFound:
		return ErrNotFound
	case codeStopping:
		return fmt.Errorf("%w: %s", ErrUnavailable, m.Header.Get(hdrError))
	default:
		return fmt.Errorf("provisioner: %s", m.Header.Get(hdrError))
	}
}
