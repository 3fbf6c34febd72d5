package natsx

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/convergence-dev/convergence/internal/natsauth"
)

// EmbeddedConfig configures the in-process NATS server.
type EmbeddedConfig struct {
	// StoreDir is where JetStream keeps its file storage. Required.
	StoreDir string
	// Host and Port are where the server listens for outside clients, such as integrators
	// consuming lifecycle events. Port -1 picks a free port; DontListen serves in-process
	// clients only.
	Host       string
	Port       int
	DontListen bool
	// Auth is the authority whose users alone may connect. Required: the server accepts no
	// anonymous client.
	Auth *natsauth.Authority
	// Cluster, when set, joins the server to a JetStream cluster; nil runs it alone.
	Cluster *ClusterConfig
}

// ClusterConfig makes an embedded server one node of a JetStream cluster (Raft among the
// nodes): every node has the same Name and Auth, a ServerName of its own, listens for the
// others' routes, and lists every node in Routes, itself included (the server skips its own).
// A node that lists none runs JetStream alone and the others wait for it. Routes are not
// authenticated: keep the route port on a network only the nodes reach.
type ClusterConfig struct {
	Name       string
	ServerName string
	// Host and Port are where the node listens for routes; Port -1 picks a free one.
	Host string
	Port int
	// Routes are the nodes' route URLs, nats-route://host:port.
	Routes []string
}

// revocationCheck is how often an embedded server looks whether users were revoked.
const revocationCheck = time.Second

// Embedded is a NATS server with JetStream running inside this process.
type Embedded struct {
	srv      *server.Server
	stop     chan struct{}
	watching sync.WaitGroup
	once     sync.Once
}

// StartEmbedded starts a NATS server with JetStream on file storage that fsyncs every write, so
// an acknowledged publish survives a crash of the process, serving only the users of cfg.Auth. It returns once the server accepts
// connections; the caller must call Shutdown.
func StartEmbedded(cfg EmbeddedConfig, logger *slog.Logger) (*Embedded, error) {
	if cfg.StoreDir == "" {
		return nil, errors.New("embedded nats: no store directory")
	}
	if cfg.Auth == nil {
		return nil, errors.New("embedded nats: no authority to authenticate clients")
	}
	if err := os.MkdirAll(cfg.StoreDir, 0o700); err != nil {
		return nil, fmt.Errorf("embedded nats: create store directory: %w", err)
	}
	host := cfg.Host
	if host == "" {
		host = "127.0.0.1"
	}
	if !cfg.DontListen && cfg.Port > 0 {
		// The server would only log a bind failure; check first so the error says what to do.
		var lc net.ListenConfig
		ln, err := lc.Listen(context.Background(), "tcp", net.JoinHostPort(host, strconv.Itoa(cfg.Port)))
		if err != nil {
			return nil, fmt.Errorf("embedded nats: port %d is in use (%w); stop what holds it, or set NATS_URL to use that server, or pick another address with CONVERGENCE_NATS_LISTEN", cfg.Port, err)
		}
		_ = ln.Close()
	}
	opts := &server.Options{
		ServerName: "convergence-embedded",
		Host:       host,
		Port:       cfg.Port,
		DontListen: cfg.DontListen,
		JetStream:  true,
		StoreDir:   cfg.StoreDir,
		SyncAlways: true,
		NoSigs:     true,
		NoLog:      true,
	}
	if c := cfg.Cluster; c != nil {
		if c.Name == "" || c.ServerName == "" {
			return nil, errors.New("embedded nats: a cluster node needs the cluster's name and a server name of its own")
		}
		opts.ServerName = c.ServerName
		opts.Cluster = server.ClusterOpts{Name: c.Name, Host: cmp.Or(c.Host, host), Port: c.Port}
		// Parsed here, not with server.RoutesFromStr, which keeps an empty or unparsable route
		// as a nil or empty URL instead of saying so.
		for _, r := range c.Routes {
			u, err := url.Parse(r)
			if err != nil || u.Scheme != "nats-route" || u.Host == "" {
				return nil, fmt.Errorf("embedded nats: route %q is not a nats-route://host:port URL", r)
			}
			opts.Routes = append(opts.Routes, u)
		}
	}
	if err := cfg.Auth.Configure(opts); err != nil {
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	srv.Start()
	if !srv.ReadyForConnections(30 * time.Second) {
		srv.Shutdown()
		return nil, errors.New("embedded nats: not ready within 30s")
	}
	logger.Info("embedded NATS JetStream started", "store_dir", cfg.StoreDir, "url", srv.ClientURL(), "listening", !cfg.DontListen)
	e := &Embedded{srv: srv, stop: make(chan struct{})}
	// A user revoked while the server runs (convergence nats revoke) is cut off within seconds.
	e.watching.Go(func() { cfg.Auth.WatchRevocations(srv, revocationCheck, e.stop, logger) })
	return e, nil
}

// Server returns the underlying server, for in-process connections.
func (e *Embedded) Server() *server.Server { return e.srv }

// ClientURL is the URL outside clients connect to; empty when the server does not listen.
func (e *Embedded) ClientURL() string {
	if e.srv.Addr() == nil {
		return ""
	}
	return e.srv.ClientURL()
}

// RouteURL is the URL other nodes of its cluster route to; empty when it is not a cluster node.
func (e *Embedded) RouteURL() string {
	addr := e.srv.ClusterAddr()
	if addr == nil {
		return ""
	}
	return "nats-route://" + addr.String()
}

// Shutdown stops the server and waits for it to finish. It is safe to call more than once.
func (e *Embedded) Shutdown() {
	e.once.Do(func() { close(e.stop) })
	e.watching.Wait()
	e.srv.Shutdown()
	e.srv.WaitForShutdown()
}

// SplitListen reads a listen address, host:port, into the Host and Port of an EmbeddedConfig.
// Port -1 asks for a free port; 0 is refused, since the server would take it for its default.
func SplitListen(addr string) (host string, port int, err error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port, err = strconv.Atoi(p)
	if err != nil || port < -1 || port == 0 || port > 65535 {
		return "", 0, fmt.Errorf("port %q must be 1 to 65535, or -1 for a free one", p)
	}
	return host, port, nil
}
