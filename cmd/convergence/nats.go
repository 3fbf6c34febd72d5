package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/convergence-dev/convergence/internal/natsx"
)

// natsConfig is what `convergence nats` reads.
type natsConfig struct {
	// Listen is where clients connect, host:port. Port -1 picks a free one.
	Listen string
	// StoreDir holds JetStream's file storage.
	StoreDir string
	// Monitor is the HTTP address of /healthz, /varz, /jsz and /metrics; empty serves none.
	Monitor string
}

// runNATS runs a standalone NATS server with JetStream until SIGINT or SIGTERM: the same
// embedded server `serve` runs without NATS_URL (file storage, fsync on every write), for the
// compose stack, where the services share one. With -probe it only checks a URL and exits.
func runNATS(args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("convergence nats", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg natsConfig
	fs.StringVar(&cfg.Listen, "nats.listen", "127.0.0.1:4222", "where clients connect, host:port (0.0.0.0 for every interface)")
	fs.StringVar(&cfg.StoreDir, "nats.store-dir", ".convergence/jetstream", "directory of the JetStream file store")
	fs.StringVar(&cfg.Monitor, "nats.monitor", "127.0.0.1:8222", "HTTP address of /healthz, /varz, /jsz and /metrics; empty for none")
	probe := fs.String("probe", "", "instead of running a server, GET this URL and exit 0 if it answers 2xx "+
		"(the healthcheck of the stack's FROM-scratch containers, which have no curl)")
	var logs logOptions
	logs.register(fs)
	if help, err := parseFlags(fs, args); help || err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *probe != "" {
		return probeHTTP(ctx, *probe)
	}
	logger, err := logs.logger(stderr)
	if err != nil {
		return err
	}
	return serveNATS(ctx, cfg, logger)
}

// serveNATS runs the server until ctx is done, then shuts it down and returns nil. It returns
// an error when the server cannot start or its monitor stops serving.
func serveNATS(ctx context.Context, cfg natsConfig, logger *slog.Logger) error {
	host, port, err := natsx.SplitListen(cfg.Listen)
	if err != nil {
		return fmt.Errorf("nats.listen %q: %w", cfg.Listen, err)
	}
	var monitor net.Listener
	if cfg.Monitor != "" {
		// Bound first, so that a port in use fails the start before the store is opened.
		if monitor, err = (&net.ListenConfig{}).Listen(ctx, "tcp", cfg.Monitor); err != nil {
			return fmt.Errorf("nats.monitor: %w; stop what holds the port or set CONVERGENCE_NATS_MONITOR", err)
		}
		defer monitor.Close()
	}
	emb, err := natsx.StartEmbedded(natsx.EmbeddedConfig{StoreDir: cfg.StoreDir, Host: host, Port: port}, logger)
	if err != nil {
		return err
	}
	defer emb.Shutdown()
	// The embedded server logs nothing by default; a standalone one is worth hearing from.
	emb.Server().SetLoggerV2(natsLogger{logger.With("component", "nats-server")}, false, false, false)

	monitorErr := make(chan error, 1)
	if monitor != nil {
		srv := &http.Server{Handler: natsMonitorHandler(emb.Server()), ReadHeaderTimeout: 10 * time.Second}
		go func() { monitorErr <- srv.Serve(monitor) }()
		defer func() {
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			_ = srv.Shutdown(sctx) // the server is going away either way
		}()
		logger.Info("nats monitor serving", "addr", monitor.Addr().String(), "paths", "/healthz /varz /jsz /metrics")
	}
	select {
	case <-ctx.Done():
		logger.Info("nats stopping")
		return nil
	case err := <-monitorErr:
		return fmt.Errorf("nats monitor: %w", err)
	}
}

// natsLogger passes the NATS server's log lines to slog. Traces are dropped: the server only
// sends them when tracing is on, which it is not.
type natsLogger struct{ l *slog.Logger }

func (n natsLogger) Noticef(format string, v ...any) { n.l.Info(fmt.Sprintf(format, v...)) }
func (n natsLogger) Warnf(format string, v ...any)   { n.l.Warn(fmt.Sprintf(format, v...)) }
func (n natsLogger) Fatalf(format string, v ...any)  { n.l.Error(fmt.Sprintf(format, v...)) }
func (n natsLogger) Errorf(format string, v ...any)  { n.l.Error(fmt.Sprintf(format, v...)) }
func (n natsLogger) Debugf(format string, v ...any)  { n.l.Debug(fmt.Sprintf(format, v...)) }
func (n natsLogger) Tracef(string, ...any)           {}
