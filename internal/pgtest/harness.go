package pgtest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/convergence-dev/convergence/internal/pglocal"
)

// EnvURL names the environment variable with the URL of an existing server to create the test
// databases on, instead of starting a local one.
const EnvURL = "TEST_DATABASE_URL"

// startTimeout bounds starting the local server and building the template database.
const startTimeout = 2 * time.Minute

// stopTimeout bounds the local server's shutdown after the tests.
const stopTimeout = 30 * time.Second

// shared is the test binary's harness; see the package documentation for why it is a package
// variable.
var shared harness

// harness is the connection of a test binary to its PostgreSQL server.
type harness struct {
	once     sync.Once
	err      error  // why the harness could not start; every New fails with it
	baseURL  string // connects to the server as a role that may create databases
	template string // the migrated database that New clones
	// createOptions end CREATE DATABASE: a strategy on the local server, nothing on a shared
	// one, where FILE_COPY's checkpoints could slow everyone down.
	createOptions string

	server *pglocal.Server // nil with TEST_DATABASE_URL
	run    *runDir         // nil with TEST_DATABASE_URL

	mu     sync.Mutex
	closed bool
}

// get starts the harness on first use and returns it, or the error it failed with.
func (h *harness) get() (*harness, error) {
	h.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
		defer cancel()
		h.err = h.start(ctx)
	})
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, errors.New("pgtest: used after the Run of pgtest.Wrap returned")
	}
	return h, h.err
}

func (h *harness) start(ctx context.Context) error {
	if url := os.Getenv(EnvURL); url != "" {
		h.baseURL = url
	} else if err := h.startServer(ctx); err != nil {
		return err
	}
	template, err := ensureTemplate(ctx, h.baseURL)
	if err != nil {
		return fmt.Errorf("pgtest: %w", err)
	}
	h.template = template
	return nil
}

// startServer starts a local server in a new run directory, with the cluster copied from an
// init cache under os.TempDir(). The run directory is in memory (/dev/shm) when there is room:
// its data is thrown away after the tests anyway.
func (h *harness) startServer(ctx context.Context) error {
	cacheBase := baseDir(os.TempDir())
	if err := ensurePrivateDir(cacheBase); err != nil {
		return fmt.Errorf("pgtest: %w", err)
	}
	runBase := cacheBase
	if mem := memoryDir(); mem != "" {
		runBase = baseDir(mem)
		removeAbandoned(cacheBase) // left there when /dev/shm was full
	}
	run, err := newRunDir(runBase)
	if err != nil {
		return fmt.Errorf("pgtest: %w", err)
	}
	logger := slog.New(slog.DiscardHandler)
	if testing.Verbose() {
		logger = slog.New(slog.NewTextHandler(os.Stderr, nil)).With("component", "pgtest")
	}
	server, err := pglocal.Start(ctx, pglocal.Config{
		Dir:       filepath.Join(run.dir, "data"),
		Logger:    logger,
		NoSync:    true,
		InitCache: filepath.Join(cacheBase, "cache"),
		Settings: map[string]string{
			// Parallel tests each hold a pool of connections.
			"max_connections": "200",
		},
	})
	if err != nil {
		_ = run.remove() // the start error is the one to report
		if errors.Is(err, pglocal.ErrBinariesNotFound) {
			return errors.New("pgtest: PostgreSQL server binaries not found on PATH: install Debian's " +
				"postgresql-15 package (apt-get install postgresql) or set " + EnvURL +
				" to the URL of a server where the tests may create databases")
		}
		return fmt.Errorf("pgtest: start a local PostgreSQL (or set %s to use a running server): %w", EnvURL, err)
	}
	h.server, h.run, h.baseURL = server, run, server.URL()
	// The server runs with fsync off, which makes FILE_COPY's checkpoints cheap, and it is
	// faster than WAL_LOG for a database as small as the template.
	h.createOptions = " STRATEGY FILE_COPY"
	return nil
}

// baseDir is the directory of pgtest's files under root, one per user, since the cache and the
// run directories must not be shared between users.
func baseDir(root string) string {
	return filepath.Join(root, fmt.Sprintf("convergence-pgtest-%d", os.Geteuid()))
}

// close stops the local server, if one was started, and removes its run directory. Later
// calls of get fail.
func (h *harness) close() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil
	}
	h.closed = true
	var errs []error
	if h.server != nil {
		ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
		defer cancel()
		if err := h.server.Stop(ctx); err != nil {
			errs = append(errs, fmt.Errorf("pgtest: stop local PostgreSQL: %w", err))
		}
	}
	if h.run != nil {
		if err := h.run.remove(); err != nil {
			errs = append(errs, fmt.Errorf("pgtest: %w", err))
		}
	}
	return errors.Join(errs...)
}
