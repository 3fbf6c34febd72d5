package pgtest

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// abandonedAfter is how old a half-made run directory must be before it counts as left behind;
// a younger one may be about to be locked and renamed.
const abandonedAfter = time.Minute

// runDir is the directory of one test binary's local server. Its lock file is locked for as
// long as the test binary runs; the kernel releases the lock when the process dies, however it
// dies, which tells later runs that the directory is theirs to remove.
type runDir struct {
	dir  string
	lock *os.File
}

// newRunDir creates a run directory under base, after removing the ones that dead test binaries
// left behind. base and the run directory are searchable by others (mode 0711) so that the
// postgres user can reach the data directory when the tests run as root.
func newRunDir(base string) (*runDir, error) {
	if err := ensurePrivateDir(base); err != nil {
		return nil, err
	}
	removeAbandoned(base)

	// The directory gets its run- name only once it is locked, so removeAbandoned never sees an
	// unlocked directory of a live test binary.
	tmp, err := os.MkdirTemp(base, "new-")
	if err != nil {
		return nil, fmt.Errorf("create run directory: %w", err)
	}
	r := &runDir{dir: tmp}
	if err := r.lockAndRename(filepath.Join(base, "run-"+strings.TrimPrefix(filepath.Base(tmp), "new-"))); err != nil {
		_ = r.remove() // the first error is the one to report
		return nil, err
	}
	return r, nil
}

// ensurePrivateDir creates dir with mode 0711 unless it exists, and checks that only this user
// can change what is in it: another user could otherwise swap in a cluster of their making.
func ensurePrivateDir(dir string) error {
	if err := os.MkdirAll(dir, 0o711); err != nil { //nolint:gosec // G301: the postgres user must pass through
		return fmt.Errorf("create %s: %w", dir, err)
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return fmt.Errorf("stat %s: %w", dir, err)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); !fi.IsDir() || !ok || int(st.Uid) != os.Geteuid() || fi.Mode().Perm()&0o022 != 0 {
		return fmt.Errorf("%s must be a directory owned by uid %d and writable only by it: remove it", dir, os.Geteuid())
	}
	return nil
}

func (r *runDir) lockAndRename(dir string) error {
	if err := os.Chmod(r.dir, 0o711); err != nil { //nolint:gosec // G302: a directory the postgres user must pass through
		return fmt.Errorf("chmod run directory: %w", err)
	}
	var err error
	if r.lock, err = os.OpenFile(filepath.Join(r.dir, "lock"), os.O_CREATE|os.O_RDWR, 0o600); err != nil {
		return fmt.Errorf("create run lock: %w", err)
	}
	if err := syscall.Flock(int(r.lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		return fmt.Errorf("lock run directory: %w", err)
	}
	if err := os.Rename(r.dir, dir); err != nil {
		return fmt.Errorf("rename run directory: %w", err)
	}
	r.dir = dir
	return nil
}

// remove deletes the run directory and releases its lock.
func (r *runDir) remove() error {
	err := os.RemoveAll(r.dir)
	if r.lock != nil {
		err = errors.Join(err, r.lock.Close())
	}
	if err != nil {
		return fmt.Errorf("remove run directory: %w", err)
	}
	return nil
}

// removeAbandoned deletes the run directories under base whose test binary has died, and the
// half-made ones of test binaries that died while creating theirs. It is best effort: a
// directory it cannot remove costs only disk space.
func removeAbandoned(base string) {
	news, _ := filepath.Glob(filepath.Join(base, "new-*"))
	for _, dir := range news {
		if fi, err := os.Stat(dir); err == nil && time.Since(fi.ModTime()) > abandonedAfter {
			_ = os.RemoveAll(dir)
		}
	}
	runs, _ := filepath.Glob(filepath.Join(base, "run-*"))
	for _, dir := range runs {
		lock, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_RDWR, 0) //nolint:gosec // G304: in our private directory
		if err != nil {
			continue
		}
		if syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) == nil {
			_ = os.RemoveAll(dir)
		}
		_ = lock.Close()
	}
}
