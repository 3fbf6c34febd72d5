package pglocal

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"runtime"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// cannotConnectNow is the SQLSTATE of "the database system is starting up".
const cannotConnectNow = "57P03"

// maxSocketPath is the longest Unix socket path PostgreSQL accepts (sun_path less its NUL).
const maxSocketPath = 107

// Server is a PostgreSQL server that Start runs as a child process. Its methods are safe for
// concurrent use.
type Server struct {
	cfg     Config
	port    int
	sockDir string // the Unix socket directory: the data directory, or a temporary one
	ownsDir bool   // sockDir is temporary and Stop removes it
	hbaFile string // pglocal's pg_hba.conf when cfg.Password or cfg.PasswordsDir is set, else empty
	// superPassword is the superuser's password in password mode (cfg.PasswordsDir), and
	// dbPassword that of the role named Database.
	superPassword, dbPassword string
	bootstrapping             bool // the superuser connects over the Unix socket, without a password
	proc                      *process

	signalOnce  sync.Once
	exitedFirst bool // the server exited before Stop asked it to; set in signalOnce

	mu      sync.Mutex
	stopErr error // Stop's result, once the server has exited
	stopped bool
}

// process is one run of the postgres binary.
type process struct {
	cmd  *exec.Cmd
	log  *serverLog
	done chan struct{} // closed when the process has exited and err is set
	err  error
}

// Start runs a PostgreSQL server on the cluster in cfg.Dir, initializing the cluster first
// when there is none, and returns once the server accepts connections and the role and
// database named Database exist. ctx bounds the start only: the server runs until Stop is
// called or this process exits. The caller must call Stop.
func Start(ctx context.Context, cfg Config) (*Server, error) {
	begin := time.Now()
	cfg, err := cfg.validate()
	if err != nil {
		return nil, err
	}
	bins, err := findBinaries(ctx, cfg.BinDir, debianBinGlob)
	if err != nil {
		return nil, err
	}
	o, err := clusterOwner()
	if err != nil {
		return nil, err
	}
	state, err := ensureCluster(ctx, cfg, bins, o)
	if err != nil {
		return nil, err
	}
	if err := clearStalePID(cfg.Dir, cfg.Logger); err != nil {
		return nil, err
	}

	s := &Server{cfg: cfg, dbPassword: cfg.Password}
	switch {
	case cfg.PasswordsDir != "":
		if s.superPassword, err = keptPassword(cfg.PasswordsDir, superuser); err != nil {
			return nil, err
		}
		if s.dbPassword, err = keptPassword(cfg.PasswordsDir, Database); err != nil {
			return nil, err
		}
		s.hbaFile, err = writeHBAFile(cfg.Dir, o, passwordHBARules())
	case cfg.Password != "":
		s.hbaFile, err = writeHBAFile(cfg.Dir, o, hbaRules())
	}
	if err != nil {
		return nil, err
	}
	if err := s.makeSocketDir(o); err != nil {
		return nil, err
	}
	conn, err := s.launch(ctx, bins, o)
	if isPasswordRefused(err) && s.superPassword != "" {
		// A cluster made before password mode: its superuser has no password yet.
		conn, err = s.bootstrapPasswords(ctx, bins, o)
	}
	if err != nil {
		s.removeSocketDir()
		return nil, err
	}
	err = ensureDatabase(ctx, conn, s.dbPassword)
	if closeErr := conn.Close(context.WithoutCancel(ctx)); err == nil {
		err = closeErr
	}
	if err != nil {
		stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		_ = s.Stop(stopCtx) // the set-up error is the one to report
		return nil, err
	}
	cfg.Logger.InfoContext(ctx, "local PostgreSQL ready", "url", s.urlFor(Database, ""), "dir", cfg.Dir,
		"listen", listenAddresses(cfg.ListenAddresses), "password", s.dbPassword != "",
		"version", bins.version, "cluster", state.String(), "took", time.Since(begin).Round(time.Millisecond))
	return s, nil
}

// URL is the connection URL for the role and database named Database, over TCP on 127.0.0.1:
// with the role's password in password mode (Config.PasswordsDir), and without one otherwise
// (the server then trusts loopback connections, with or without Config.Password). The role may
// create databases.
func (s *Server) URL() string {
	if s.cfg.PasswordsDir != "" {
		return s.urlFor(Database, s.dbPassword)
	}
	return s.urlFor(Database, "")
}

// Done is closed when the server process has exited, whether Stop stopped it or not.
func (s *Server) Done() <-chan struct{} { return s.proc.done }

// Stop shuts the server down with a fast shutdown (SIGINT: clients are disconnected, open
// transactions roll back, and a checkpoint is written) and waits for it and all its processes
// to exit. If ctx ends first, Stop kills the server, waits for it to exit, and returns an
// error. Stop is idempotent: every call waits for the exit and returns the same result, which
// is an error when the server had exited before the first Stop.
func (s *Server) Stop(ctx context.Context) error {
	s.signalOnce.Do(func() {
		select {
		case <-s.proc.done:
			s.exitedFirst = true
		default:
			_ = s.proc.cmd.Process.Signal(os.Interrupt) // fails only when it has just exited
		}
	})
	var killErr error
	select {
	case <-s.proc.done:
	case <-ctx.Done():
		_ = s.proc.cmd.Process.Kill() // fails only when it has just exited
		<-s.proc.done
		killErr = fmt.Errorf("stop postgres: killed it after %w", context.Cause(ctx))
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.stopped {
		s.stopped = true
		s.removeSocketDir()
		switch {
		case s.exitedFirst:
			s.stopErr = fmt.Errorf("postgres exited before Stop: %w\n%s", s.proc.err, s.proc.log.tail())
		case killErr != nil:
			s.stopErr = killErr
		case s.proc.err != nil:
			s.stopErr = fmt.Errorf("stop postgres: %w\n%s", s.proc.err, s.proc.log.tail())
		}
	}
	return s.stopErr
}

// makeSocketDir puts the Unix socket in the data directory, or in a new directory under /tmp
// when the data directory's path is too long for a socket path.
func (s *Server) makeSocketDir(o owner) error {
	if len(s.cfg.Dir)+len("/.s.PGSQL.65535") <= maxSocketPath {
		s.sockDir = s.cfg.Dir
		return nil
	}
	dir, err := os.MkdirTemp("/tmp", "pglocal-")
	if err != nil {
		return fmt.Errorf("create socket directory: %w", err)
	}
	s.sockDir, s.ownsDir = dir, true
	if err := o.chown(dir); err != nil {
		s.removeSocketDir()
		return err
	}
	return nil
}

func (s *Server) removeSocketDir() {
	if s.ownsDir {
		_ = os.RemoveAll(s.sockDir) // best effort: an empty directory in /tmp
	}
}

// launch starts postgres and waits until it accepts connections. When the port it picked was
// taken in the meantime, or the processes of a killed server still hold its shared memory, it
// tries again until ctx ends.
func (s *Server) launch(ctx context.Context, bins binaries, o owner) (*pgx.Conn, error) {
	for attempt := 1; ; attempt++ {
		port := s.cfg.Port
		if port == 0 {
			var err error
			if port, err = freePort(ctx); err != nil {
				return nil, err
			}
		}
		p, err := startProcess(bins.postgres, s.args(port), o, s.cfg.Logger, s.cfg.ServerLogLevel)
		if err != nil {
			return nil, err
		}
		config, err := s.superuserConfig(port, s.bootstrapping)
		if err != nil {
			_ = p.cmd.Process.Kill() // fails only when it has just exited
			<-p.done
			return nil, err
		}
		conn, err := waitReady(ctx, p, config)
		if err == nil {
			s.port, s.proc = port, p
			return conn, nil
		}
		if ctx.Err() != nil || attempt >= 50 {
			return nil, err
		}
		switch {
		case s.cfg.Port == 0 && (p.log.contains("could not bind") || p.log.contains(".lock\" already exists")):
			// Another process took the port between freePort and postgres's bind.
		case p.log.contains("pre-existing shared memory block"):
			// The backends of a killed server are still exiting.
			select {
			case <-ctx.Done():
				return nil, err
			case <-time.After(100 * time.Millisecond):
			}
		default:
			return nil, err
		}
		s.cfg.Logger.DebugContext(ctx, "postgres start retried", "attempt", attempt, "err", err)
	}
}

// args are postgres's command-line arguments: the listen addresses (loopback included), the
// socket in sockDir, pglocal's pg_hba.conf when there is one, then the durability settings
// and the caller's Settings, in a stable order.
func (s *Server) args(port int) []string {
	args := []string{
		"-D", s.cfg.Dir,
		"-p", strconv.Itoa(port),
		"-c", "listen_addresses=" + listenAddresses(s.cfg.ListenAddresses),
		"-c", "unix_socket_directories=" + s.sockDir,
	}
	if s.hbaFile != "" {
		args = append(args, "-c", "hba_file="+s.hbaFile)
	}
	if s.cfg.NoSync {
		args = append(args, "-c", "fsync=off", "-c", "full_page_writes=off")
	}
	names := make([]string, 0, len(s.cfg.Settings))
	for name := range s.cfg.Settings {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		args = append(args, "-c", name+"="+s.cfg.Settings[name])
	}
	return args
}

// startProcess starts postgres from a goroutine locked to its OS thread, which stays blocked in
// Wait for as long as the server runs: Linux sends the parent-death signal when the thread that
// started a child exits, and a locked thread exits only with its goroutine.
func startProcess(postgres string, args []string, o owner, log *slog.Logger, level slog.Leveler) (*process, error) {
	p := &process{
		log:  &serverLog{log: log, level: level},
		done: make(chan struct{}),
	}
	// Not CommandContext: the server outlives Start's ctx, and Stop ends it.
	p.cmd = exec.Command(postgres, args...) //nolint:noctx // see above
	p.cmd.Env = childEnv()
	p.cmd.Dir = "/" // the server changes to its data directory; ours may be closed to its user
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	p.cmd.SysProcAttr = sysProcAttr(o)
	// Backends left by a killed postmaster may hold stderr open for a moment.
	p.cmd.WaitDelay = 5 * time.Second

	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := p.cmd.Start(); err != nil {
			started <- fmt.Errorf("start postgres: %w", err)
			return
		}
		started <- nil
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	return p, <-started
}

// waitReady connects as the superuser until the server answers, and returns that connection.
// If the server exits first, or ctx ends, it makes sure the server is gone and returns an
// error quoting the server's log.
func waitReady(ctx context.Context, p *process, config *pgx.ConnConfig) (*pgx.Conn, error) {
	for {
		conn, err := pgx.ConnectConfig(ctx, config)
		if err == nil {
			return conn, nil
		}
		// The server answers "starting up" (57P03) until it is ready; any other answer, such as
		// an unknown role in a cluster someone else initialized, will not change by waiting.
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code != cannotConnectNow {
			_ = p.cmd.Process.Signal(os.Interrupt) // fails only when it has just exited
			<-p.done
			return nil, fmt.Errorf("connect to postgres as superuser %s: %w", superuser, err)
		}
		select {
		case <-p.done:
			return nil, fmt.Errorf("postgres exited during start: %w\n%s", p.err, p.log.tail())
		case <-ctx.Done():
			_ = p.cmd.Process.Kill() // fails only when it has just exited
			<-p.done
			return nil, fmt.Errorf("wait for postgres to accept connections: %w (last error: %w)\n%s",
				context.Cause(ctx), err, p.log.tail())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort(ctx context.Context) (int, error) {
	var lc net.ListenConfig
	l, err := lc.Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	if err := l.Close(); err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	return port, nil
}
