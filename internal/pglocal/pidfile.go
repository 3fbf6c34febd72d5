package pglocal

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// ErrInUse means that a live PostgreSQL server, not started by this Server, owns the data
// directory.
var ErrInUse = errors.New("data directory is in use by another PostgreSQL server")

// clearStalePID removes the postmaster.pid, and the socket files next to it, that a server
// killed without a shutdown left in dir. PostgreSQL does this itself only when the recorded
// process is gone; a zombie, or an unrelated process that reused the PID, makes it refuse to
// start. It returns ErrInUse when the recorded process is a live server for dir.
func clearStalePID(dir string, log *slog.Logger) error {
	path := filepath.Join(dir, "postmaster.pid")
	data, err := os.ReadFile(path) //nolint:gosec // G304: the pid file of the data directory
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read postmaster.pid: %w", err)
	}
	first, _, _ := strings.Cut(string(data), "\n")
	pid, _ := strconv.Atoi(strings.TrimSpace(first))
	if pid < 0 { // a single-user backend records its PID negated
		pid = -pid
	}
	if pid > 0 && serverRunning(pid, dir) {
		return fmt.Errorf("%w: %s is served by PID %d; stop that server or use another directory", ErrInUse, dir, pid)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove stale postmaster.pid: %w", err)
	}
	sockets, _ := filepath.Glob(filepath.Join(dir, ".s.PGSQL.*"))
	for _, s := range sockets {
		_ = os.Remove(s) // a leftover socket lock only matters if its port is picked again
	}
	log.Warn("removed stale postmaster.pid of a server that did not shut down", "dir", dir, "pid", pid)
	return nil
}
