package pglocal

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// initdbArgs are the options of every cluster pglocal creates: a superuser named postgres
// whatever the OS user is, trust authentication (the server listens on loopback only), UTF8
// with the C locale, which exists everywhere and sorts by byte.
var initdbArgs = []string{"--username=postgres", "--auth=trust", "--encoding=UTF8", "--locale=C"}

// clusterState says what ensureCluster found or did.
type clusterState int

const (
	clusterReused clusterState = iota
	clusterCreated
	clusterCopied
)

// ensureCluster makes sure cfg.Dir holds a cluster of the binaries' major version, owned by o:
// it reuses an existing one, copies one from the init cache, or runs initdb.
func ensureCluster(ctx context.Context, cfg Config, bins binaries, o owner) (clusterState, error) {
	// The postgres user must pass through the parents when we are root.
	if err := os.MkdirAll(filepath.Dir(cfg.Dir), 0o755); err != nil { //nolint:gosec // G301: see above
		return 0, fmt.Errorf("create parent of data directory: %w", err)
	}
	if err := os.Mkdir(cfg.Dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return 0, fmt.Errorf("create data directory: %w", err)
	}
	if err := o.checkSearchable(cfg.Dir); err != nil {
		return 0, err
	}

	version, err := os.ReadFile(filepath.Join(cfg.Dir, "PG_VERSION"))
	switch {
	case err == nil:
		clusterVersion := strings.TrimSpace(string(version))
		if major, _ := strconv.Atoi(clusterVersion); major != bins.major {
			return 0, fmt.Errorf("data directory %s holds a PostgreSQL %s cluster but the binaries are version %s: "+
				"remove the directory or install PostgreSQL %s", cfg.Dir, clusterVersion, bins.version, clusterVersion)
		}
		if err := o.chownTree(cfg.Dir); err != nil {
			return 0, err
		}
		return clusterReused, nil
	case !errors.Is(err, fs.ErrNotExist):
		return 0, fmt.Errorf("read PG_VERSION: %w", err)
	}

	entries, err := os.ReadDir(cfg.Dir)
	if err != nil {
		return 0, fmt.Errorf("read data directory: %w", err)
	}
	if len(entries) > 0 {
		return 0, fmt.Errorf("data directory %s is neither empty nor a PostgreSQL cluster (no PG_VERSION): "+
			"remove it or choose another directory", cfg.Dir)
	}
	if err := o.chown(cfg.Dir); err != nil {
		return 0, err
	}
	if err := os.Chmod(cfg.Dir, 0o700); err != nil { //nolint:gosec // G302: a directory, which needs x
		return 0, fmt.Errorf("chmod data directory: %w", err)
	}

	if cfg.InitCache != "" {
		c := initCache{dir: cfg.InitCache, bins: bins, owner: o, log: cfg.Logger}
		src, err := c.entry(ctx)
		if err == nil {
			if err := copyCluster(src, cfg.Dir, o, !cfg.NoSync); err != nil {
				emptyDir(cfg.Dir) // so that the next Start tries again
				return 0, err
			}
			return clusterCopied, nil
		}
		if !errors.Is(err, errUnsafeCache) {
			return 0, err
		}
		cfg.Logger.WarnContext(ctx, "init cache not used", "err", err)
	}
	if err := initdb(ctx, bins, o, cfg.Dir, cfg.NoSync); err != nil {
		return 0, err
	}
	return clusterCreated, nil
}

// initdb creates a cluster in dir, which must exist and be empty.
func initdb(ctx context.Context, bins binaries, o owner, dir string, noSync bool) error {
	args := append([]string{"--pgdata=" + dir}, initdbArgs...)
	if noSync {
		args = append(args, "--no-sync")
	}
	cmd := exec.CommandContext(ctx, bins.initdb, args...)
	cmd.Env = childEnv()
	cmd.Dir = "/" // ours may be closed to the owner
	cmd.SysProcAttr = sysProcAttr(o)
	// initdb cleans up the directory when it is interrupted, not when it is killed.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 5 * time.Second
	if out, err := cmd.CombinedOutput(); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("initdb: %w", ctx.Err())
		}
		return fmt.Errorf("initdb: %w: %s", err, lastLines(string(out), 10))
	}
	return nil
}

// emptyDir removes what is in dir, best effort.
func emptyDir(dir string) {
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		_ = os.RemoveAll(filepath.Join(dir, e.Name()))
	}
}

// childEnv is the environment of initdb and postgres: ours without the PG* variables, which
// would otherwise change what they do (PGDATA, PGPORT, ...).
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PG") {
			env = append(env, kv)
		}
	}
	return env
}

// lastLines returns the last n lines of text, for error messages.
func lastLines(text string, n int) string {
	lines := strings.Split(strings.TrimRight(text, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func (s clusterState) String() string {
	switch s {
	case clusterCreated:
		return "created by initdb"
	case clusterCopied:
		return "copied from init cache"
	default:
		return "reused"
	}
}
