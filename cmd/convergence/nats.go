package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/convergence-dev/convergence/internal/natsauth"
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
	// AuthDir holds the authority whose users alone may connect (internal/natsauth); made
	// there on first start. Every node of a cluster needs the same one.
	AuthDir string
	// Cluster names the JetStream cluster this server is a node of; empty runs it alone.
	// ServerName is the node's own name, ClusterListen where it takes the other nodes'
	// routes, and Routes (comma separated, nats-route://host:port) every node, itself included.
	Cluster, ServerName, ClusterListen, Routes string
	// StreamReplicas is how many copies of each stream the cluster keeps (3 on three nodes).
	StreamReplicas int
}

// runNATS runs a standalone NATS server with JetStream until SIGINT or SIGTERM: the same
// embedded server `serve` runs without NATS_URL (file storage, fsync on every write, only the
// users of its authority), for the compose stack, where the services share one. With -probe
// it only checks a URL and exits; `nats creds` issues a user instead.
func runNATS(args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "creds" {
		return runNATSCreds(args[1:], stdout, stderr)
	}
	if len(args) > 0 && args[0] == "revoke" {
		return runNATSRevoke(args[1:], stdout, stderr)
	}
	if len(args) > 0 && args[0] == "init" {
		return runNATSInit(args[1:], stdout, stderr)
	}
	fs := flag.NewFlagSet("convergence nats", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg natsConfig
	fs.StringVar(&cfg.Listen, "nats.listen", "127.0.0.1:4222", "where clients connect, host:port (0.0.0.0 for every interface)")
	fs.StringVar(&cfg.StoreDir, "nats.store-dir", ".convergence/jetstream", "directory of the JetStream file store")
	fs.StringVar(&cfg.AuthDir, "nats.auth-dir", ".convergence/nats-auth", "directory of the keys that sign the server's accounts and users (made on first start)")
	fs.StringVar(&cfg.Monitor, "nats.monitor", "127.0.0.1:8222", "HTTP address of /healthz, /varz, /jsz and /metrics; empty for none")
	fs.StringVar(&cfg.Cluster, "nats.cluster", "", "name of the JetStream cluster this server is a node of; empty runs it alone")
	fs.StringVar(&cfg.ServerName, "nats.server-name", "", "with -nats.cluster: this node's name, unique in the cluster")
	fs.StringVar(&cfg.ClusterListen, "nats.cluster-listen", "0.0.0.0:6222", "with -nats.cluster: where the other nodes' routes connect, host:port (keep it on a network only the nodes reach)")
	fs.StringVar(&cfg.Routes, "nats.routes", "", "with -nats.cluster: every node of the cluster, this one included, comma separated nats-route://host:port")
	fs.IntVar(&cfg.StreamReplicas, "nats.stream-replicas", 1, "copies of each stream: 1 alone, 3 on a cluster of three")
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
	if cfg.StreamReplicas < 1 || cfg.StreamReplicas > 5 {
		return fmt.Errorf("nats.stream-replicas %d: JetStream keeps 1 to 5 copies of a stream; use 1 alone, 3 on a cluster of three", cfg.StreamReplicas)
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
	auth, err := natsauth.LoadOrCreate(cfg.AuthDir)
	if err != nil {
		return err
	}
	ec := natsx.EmbeddedConfig{StoreDir: cfg.StoreDir, Host: host, Port: port, Auth: auth}
	if cfg.Cluster != "" {
		ch, cp, err := natsx.SplitListen(cfg.ClusterListen)
		if err != nil {
			return fmt.Errorf("nats.cluster-listen %q: %w", cfg.ClusterListen, err)
		}
		ec.Cluster = &natsx.ClusterConfig{Name: cfg.Cluster, ServerName: cfg.ServerName, Host: ch, Port: cp, Routes: splitList(cfg.Routes)}
	}
	emb, err := natsx.StartEmbedded(ec, logger)
	if err != nil {
		return err
	}
	defer emb.Shutdown()
	// The embedded server logs nothing by default; a standalone one is worth hearing from.
	emb.Server().SetLoggerV2(natsLogger{logger.With("component", "nats-server")}, false, false, false)
	// The services may not manage streams; the server's own process keeps them.
	if err := ensureStreams(ctx, emb, auth, cfg.StreamReplicas, logger); err != nil {
		return err
	}

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

// ensureStreams creates or updates the platform's streams, replicas copies of each, through an
// in-process admin user. A cluster node retries for up to two minutes, while the other nodes
// join and the cluster elects the leader that creates streams.
func ensureStreams(ctx context.Context, emb *natsx.Embedded, auth *natsauth.Authority, replicas int, logger *slog.Logger) error {
	opts, err := auth.Connect(natsauth.Admin, "convergence-streams")
	if err != nil {
		return err
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		err := natsx.SetUpStreams(ctx, "", emb, replicas, logger, opts...)
		if err == nil || emb.RouteURL() == "" || time.Now().After(deadline) || ctx.Err() != nil {
			return err
		}
		logger.Info("streams not set up yet; the cluster may still be forming", "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(2 * time.Second):
		}
	}
}

// splitList reads a comma separated list, leaving out empty items.
func splitList(s string) []string {
	var out []string
	for item := range strings.SplitSeq(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

// runNATSCreds writes a credentials file for a new user of a role, issued by the authority of
// a data dir (that of `make run`) or of a standalone server.
func runNATSCreds(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("convergence nats creds", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: convergence nats creds [flags] ROLE\n\nROLE is one of %s.\n"+
			"integrator may read tenant lifecycle events and convergence results, and nothing else.\n\n", natsauth.RoleNames())
		fs.PrintDefaults()
	}
	var authority authorityFlags
	authority.register(fs)
	out := fs.String("o", "-", "file to write (mode 0600), or - for standard output")
	name := fs.String("name", "", "the user's name, as the server shows it; empty is the role")
	expires := fs.Duration("expires", 0, "how long the credentials are valid, e.g. 720h; 0 is forever")
	// The role may come before or after the flags.
	var role string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		role, args = args[0], args[1:]
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if role == "" && fs.NArg() > 0 {
		role = fs.Arg(0)
	} else if fs.NArg() > 0 {
		return fmt.Errorf("nats creds: unexpected argument %q", fs.Arg(0))
	}
	if err := bindEnv(fs, os.LookupEnv); err != nil {
		return err
	}
	if role == "" {
		fs.Usage()
		return errors.New("nats creds: name a role")
	}
	r, err := natsauth.ParseRole(role)
	if err != nil {
		return err
	}
	if *expires < 0 {
		return errors.New("nats creds: -expires must not be negative")
	}
	auth, err := authority.load()
	if err != nil {
		return err
	}
	if *name == "" {
		*name = string(r)
	}
	creds, err := auth.Creds(r, *name, *expires)
	if err != nil {
		return err
	}
	if *out == "-" {
		_, err := stdout.Write(creds)
		return err
	}
	if err := os.WriteFile(*out, creds, 0o600); err != nil { //nolint:gosec // The operator names the file to write.
		return fmt.Errorf("write credentials: %w", err)
	}
	// WriteFile keeps the mode of a file that was there already.
	return os.Chmod(*out, 0o600)
}

// authorityFlags say which NATS authority a command issues or revokes users of: that of a
// data dir (make run's), or the one in a directory of its own (a standalone server's).
type authorityFlags struct{ dataDir, authDir string }

func (a *authorityFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&a.dataDir, "data-dir", ".convergence", "the platform's data dir, whose nats-auth folder holds the authority")
	fs.StringVar(&a.authDir, "nats.auth-dir", "", "the authority's directory; empty is <data-dir>/nats-auth")
}

// load reads the authority the flags name; it makes none.
func (a *authorityFlags) load() (*natsauth.Authority, error) {
	if a.authDir != "" {
		return natsauth.Load(a.authDir)
	}
	return natsauth.Load(natsauth.DirIn(a.dataDir))
}

// runNATSInit makes the authority in -nats.auth-dir unless one is there: for a cluster whose nodes get the same authority as files (Swarm or
// Kubernetes secrets) before any of them starts.
func runNATSInit(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("convergence nats init", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("nats.auth-dir", "", "the directory to make the authority in")
	if help, err := parseFlags(fs, args); help || err != nil {
		return err
	}
	if *dir == "" {
		return errors.New("nats init: give -nats.auth-dir DIR")
	}
	if _, err := natsauth.LoadOrCreate(*dir); err != nil {
		return err
	}
	_, err := fmt.Fprintf(stdout, "NATS authority in %s\n", *dir)
	return err
}

// runNATSRevoke revokes a user the authority issued: a running server of the same authority
// directory closes its connections within seconds, and every server refuses it from then on,
// whatever its JWT says.
func runNATSRevoke(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("convergence nats revoke", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var authority authorityFlags
	authority.register(fs)
	creds := fs.String("creds", "", "the credentials file of the user to revoke")
	user := fs.String("user", "", "or the user's public key (U...)")
	if help, err := parseFlags(fs, args); help || err != nil {
		return err
	}
	if (*creds == "") == (*user == "") {
		return errors.New("nats revoke: give -creds FILE or -user PUBLIC_KEY")
	}
	name := ""
	if *creds != "" {
		var err error
		if *user, name, err = natsauth.UserOf(*creds); err != nil {
			return err
		}
	}
	auth, err := authority.load()
	if err != nil {
		return err
	}
	if err := auth.Revoke(*user); err != nil {
		return err
	}
	_, err = fmt.Fprintf(stdout, "revoked NATS user %s %s; the NATS server closes its connections within seconds and refuses it from now on\n", *user, name)
	return err
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
