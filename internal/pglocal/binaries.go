package pglocal

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// ErrBinariesNotFound means that no PostgreSQL server binaries (postgres and initdb) were found.
var ErrBinariesNotFound = errors.New("PostgreSQL server binaries not found on PATH: " +
	"install Debian's postgresql-15 package (apt-get install postgresql) or set DATABASE_URL")

// debianBinGlob matches the server binary directories of Debian's postgresql-NN packages, which
// do not put postgres and initdb on PATH.
const debianBinGlob = "/usr/lib/postgresql/*/bin"

// binaries are the server programs of one PostgreSQL installation.
type binaries struct {
	postgres string
	initdb   string
	version  string // "15.18"
	major    int    // 15
}

// findBinaries locates postgres and initdb: in binDir when it is set, otherwise on PATH and
// then in the directories matching fallbackGlob, highest major version first. postgres and
// initdb are taken from the same directory, so a cluster is never initialized by one version
// and served by another.
func findBinaries(ctx context.Context, binDir, fallbackGlob string) (binaries, error) {
	var dirs []string
	if binDir != "" {
		dirs = []string{binDir}
	} else {
		if p, err := exec.LookPath("postgres"); err == nil {
			if resolved, err := filepath.EvalSymlinks(p); err == nil {
				dirs = append(dirs, filepath.Dir(resolved))
			}
			dirs = append(dirs, filepath.Dir(p))
		}
		fallback, _ := filepath.Glob(fallbackGlob) // the pattern is constant and valid
		sort.Slice(fallback, func(i, j int) bool {
			return versionOfDir(fallback[i]) > versionOfDir(fallback[j])
		})
		dirs = append(dirs, fallback...)
	}
	for _, dir := range dirs {
		b := binaries{
			postgres: filepath.Join(dir, "postgres"),
			initdb:   filepath.Join(dir, "initdb"),
		}
		if !isExecutable(b.postgres) || !isExecutable(b.initdb) {
			continue
		}
		var err error
		if b.version, b.major, err = serverVersion(ctx, b.postgres); err != nil {
			return binaries{}, err
		}
		return b, nil
	}
	if binDir != "" {
		return binaries{}, fmt.Errorf("look in %s: %w", binDir, ErrBinariesNotFound)
	}
	return binaries{}, ErrBinariesNotFound
}

// versionOfDir returns the major version in a path like /usr/lib/postgresql/15/bin, or 0.
func versionOfDir(dir string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(dir)))
	return v
}

func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}

// serverVersion asks a postgres binary for its version. The output looks like
// "postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)".
func serverVersion(ctx context.Context, postgres string) (version string, major int, err error) {
	out, err := exec.CommandContext(ctx, postgres, "--version").Output()
	if err != nil {
		return "", 0, fmt.Errorf("run %s --version: %w", postgres, err)
	}
	_, rest, ok := strings.Cut(string(out), "(PostgreSQL) ")
	if fields := strings.Fields(rest); ok && len(fields) > 0 {
		version = fields[0]
	}
	digits := strings.IndexFunc(version, func(r rune) bool { return r < '0' || r > '9' })
	if digits < 0 {
		digits = len(version)
	}
	if major, err = strconv.Atoi(version[:digits]); err != nil || major < 10 {
		return "", 0, fmt.Errorf("parse version of %s from %q", postgres, strings.TrimSpace(string(out)))
	}
	return version, major, nil
}
