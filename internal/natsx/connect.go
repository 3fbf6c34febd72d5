package natsx

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/convergence-dev/convergence/pkg/events"
)

// Connect connects to the NATS server at url, or in process to embedded when it is not nil,
// with extra options (its user's credentials, say). The connection reconnects forever; the
// caller closes it with Drain or Close. Asynchronous errors, a permission the server refused
// above all, are logged.
func Connect(serverURL string, embedded *Embedded, name string, logger *slog.Logger, extra ...nats.Option) (*nats.Conn, error) {
	opts := []nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				logger.Warn("nats disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) { logger.Info("nats reconnected", "url", c.ConnectedUrlRedacted()) }),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			attrs := []any{"err", err, "connection", name}
			if sub != nil {
				attrs = append(attrs, "subject", sub.Subject)
			}
			logger.Error("nats", attrs...)
		}),
	}
	opts = append(opts, extra...)
	if embedded != nil {
		opts = append(opts, nats.InProcessServer(embedded.Server()))
		serverURL = ""
	}
	nc, err := nats.Connect(serverURL, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to nats at %s: %w; check NATS_URL, or unset it to run an embedded server", redact(serverURL), err)
	}
	return nc, nil
}

// SetUpStreams connects to the server at serverURL (or to embedded) with opts, the options of
// a user that may manage streams, and ensures the platform's streams there with replicas copies
// of each (see EnsureStreams).
func SetUpStreams(ctx context.Context, serverURL string, embedded *Embedded, replicas int, logger *slog.Logger, opts ...nats.Option) error {
	nc, err := Connect(serverURL, embedded, "convergence-streams", logger, opts...)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return EnsureStreams(sctx, js, replicas)
}

// KeepReplicas, as EnsureStreams' replicas, keeps the number of copies an existing stream has
// and makes a missing one with a single copy: what the services' processes ask for, so that a
// process connecting to a cluster as an admin never takes the streams its operator made with
// three copies (`convergence nats -nats.stream-replicas 3`) down to one.
const KeepReplicas = 0

// EnsureStreams creates every stream pkg/events defines, or updates one whose definition
// changed, each stored replicas times (1 on a single server; 3 on a cluster, so that losing a
// node loses nothing and the streams go on), or as many times as it is now with
// [KeepReplicas]. It is idempotent, so every process calls it at start.
func EnsureStreams(ctx context.Context, js jetstream.JetStream, replicas int) error {
	for _, cfg := range events.Streams() {
		cfg.Replicas = replicas
		if replicas == KeepReplicas {
			cfg.Replicas = 1
			s, err := js.Stream(ctx, cfg.Name)
			switch {
			case err == nil:
				cfg.Replicas = max(s.CachedInfo().Config.Replicas, 1)
			case !errors.Is(err, jetstream.ErrStreamNotFound):
				return fmt.Errorf("look up stream %s: %w", cfg.Name, err)
			}
		}
		if _, err := js.CreateOrUpdateStream(ctx, cfg); err != nil {
			return fmt.Errorf("ensure stream %s: %w", cfg.Name, err)
		}
	}
	return nil
}

// redact hides a password in a NATS URL so it can be shown in an error.
func redact(raw string) string {
	if raw == "" {
		return "(embedded)"
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Redacted()
}
