package pglocal

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// errUnsafeCache means the init cache directory could be changed by another user; a cluster
// copied from it could carry their configuration (an archive_command, say), so it is not used.
var errUnsafeCache = errors.New("init cache is not private to this user")

// abandonedAfter is how old a half-built cache entry must be before it counts as left behind by
// a process that died while running initdb.
const abandonedAfter = time.Hour

// initCache keeps one freshly initialized cluster per PostgreSQL version, owner and set of
// initdb options, to be copied into new data directories.
type initCache struct {
	dir   string
	bins  binaries
	owner owner
	log   *slog.Logger
}

// entry returns the directory of the cached cluster, building it first if needed. Concurrent
// callers, in this process or others, may each run initdb; every one builds in a private
// directory and renames it into place, so the entry appears whole or not at all.
func (c initCache) entry(ctx context.Context) (string, error) {
	if err := c.prepare(); err != nil {
		return "", err
	}
	sum := sha256.Sum256([]byte(strings.Join(initdbArgs, "\x00")))
	path := filepath.Join(c.dir, fmt.Sprintf("pg%s-uid%d-%s", c.bins.version, c.owner.uid, hex.EncodeToString(sum[:4])))
	if isCluster(path) {
		return path, nil
	}
	c.removeAbandoned()

	start := time.Now()
	tmp, err := os.MkdirTemp(c.dir, "tmp-")
	if err != nil {
		return "", fmt.Errorf("init cache: %w", err)
	}
	defer func() { _ = os.RemoveAll(tmp) }() // nothing is left to remove once renamed
	if err := c.owner.chown(tmp); err != nil {
		return "", err
	}
	if err := initdb(ctx, c.bins, c.owner, tmp, true); err != nil {
		return "", fmt.Errorf("init cache: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		if isCluster(path) { // another process got there first
			return path, nil
		}
		return "", fmt.Errorf("init cache: %w", err)
	}
	c.log.InfoContext(ctx, "init cache filled", "dir", path, "took", time.Since(start).Round(time.Millisecond))
	return path, nil
}

// prepare creates the cache directory and checks that only this user can change it. Mode 0711
// lets the postgres user reach its own entries when the process is root.
func (c initCache) prepare() error {
	if err := os.MkdirAll(c.dir, 0o711); err != nil { //nolint:gosec // G301: the postgres user must pass through
		return fmt.Errorf("init cache: %w", err)
	}
	fi, err := os.Lstat(c.dir)
	if err != nil {
		return fmt.Errorf("init cache: %w", err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !fi.IsDir() || !ok || int(st.Uid) != os.Geteuid() || fi.Mode().Perm()&0o022 != 0 {
		return fmt.Errorf("%w: %s must be a directory owned by uid %d and writable only by it", errUnsafeCache, c.dir, os.Geteuid())
	}
	return nil
}

// removeAbandoned deletes half-built entries of processes that died during initdb.
func (c initCache) removeAbandoned() {
	tmps, _ := filepath.Glob(filepath.Join(c.dir, "tmp-*"))
	for _, tmp := range tmps {
		if fi, err := os.Stat(tmp); err == nil && time.Since(fi.ModTime()) > abandonedAfter {
			_ = os.RemoveAll(tmp) // best effort: a leftover costs only disk space
		}
	}
}

// isCluster reports whether dir holds a cluster whose creation finished.
func isCluster(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, "PG_VERSION"))
	return err == nil
}

// copyCluster copies the cluster in src into the empty directory dst, giving every file to o.
// PG_VERSION is written last, so a copy cut short is not taken for a cluster. With sync, the
// copy is flushed to disk before copyCluster returns.
func copyCluster(src, dst string, o owner, sync bool) error {
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		switch {
		case rel == ".":
			return nil
		case rel == "PG_VERSION":
			return nil
		case d.IsDir():
			fi, err := d.Info()
			if err != nil {
				return err
			}
			if err := os.Mkdir(filepath.Join(dst, rel), fi.Mode().Perm()); err != nil {
				return err
			}
			return o.chown(filepath.Join(dst, rel))
		case d.Type().IsRegular():
			return copyFile(path, filepath.Join(dst, rel), o)
		default:
			return fmt.Errorf("%s is neither a file nor a directory", path)
		}
	})
	if err == nil {
		err = copyFile(filepath.Join(src, "PG_VERSION"), filepath.Join(dst, "PG_VERSION"), o)
	}
	if err != nil {
		return fmt.Errorf("copy cluster from init cache: %w", err)
	}
	if sync {
		syscall.Sync()
	}
	return nil
}

// copyFile copies one file with its permissions; on Linux io.Copy lets the kernel move the bytes
// (copy_file_range).
func copyFile(src, dst string, o owner) error {
	in, err := os.Open(src) //nolint:gosec // G304: a file of the init cache, which prepare checked
	if err != nil {
		return err
	}
	defer func() { _ = in.Close() }() // read only: closing cannot lose data
	fi, err := in.Stat()
	if err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, fi.Mode().Perm()) //nolint:gosec // G304: inside the data directory
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		_ = out.Close() // the copy error is the one to report
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	return o.chown(dst)
}
