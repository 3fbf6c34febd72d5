//go:build unix

package pglocal

import (
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
)

// ownerName is the system user that owns clusters when the process is root, as Debian's
// postgresql packages create it.
const ownerName = "postgres"

// owner is the operating system user that owns a cluster's files and runs initdb and postgres.
type owner struct {
	name     string
	uid      int
	gid      int
	groups   []int // supplementary groups, for permission checks and the child's credential
	dropRoot bool  // the process is root and its children must run as this user
}

// clusterOwner returns the current user, or the postgres system user when the process is root,
// because PostgreSQL refuses to run as root.
func clusterOwner() (owner, error) {
	if os.Geteuid() != 0 {
		return owner{name: "current user", uid: os.Geteuid(), gid: os.Getegid()}, nil
	}
	u, err := user.Lookup(ownerName)
	if err != nil {
		return owner{}, fmt.Errorf("look up user %q, which runs PostgreSQL when the process is root "+
			"(create it with `useradd --system postgres` or run as a non-root user): %w", ownerName, err)
	}
	o := owner{name: ownerName, dropRoot: true}
	if o.uid, err = strconv.Atoi(u.Uid); err != nil {
		return owner{}, fmt.Errorf("user %q: uid %q: %w", ownerName, u.Uid, err)
	}
	if o.gid, err = strconv.Atoi(u.Gid); err != nil {
		return owner{}, fmt.Errorf("user %q: gid %q: %w", ownerName, u.Gid, err)
	}
	ids, _ := u.GroupIds() // without supplementary groups the primary group still applies
	for _, id := range ids {
		if g, err := strconv.Atoi(id); err == nil && g != o.gid {
			o.groups = append(o.groups, g)
		}
	}
	return o, nil
}

// credential is what a child process runs as: nil (the current user) unless the process is
// root.
func (o owner) credential() *syscall.Credential {
	if !o.dropRoot {
		return nil
	}
	groups := make([]uint32, len(o.groups))
	for i, g := range o.groups {
		groups[i] = uint32(g)
	}
	return &syscall.Credential{Uid: uint32(o.uid), Gid: uint32(o.gid), Groups: groups}
}

// chown gives path to the owner. Without a user switch, the files are already the current
// user's and chown does nothing.
func (o owner) chown(path string) error {
	if !o.dropRoot {
		return nil
	}
	if err := os.Lchown(path, o.uid, o.gid); err != nil {
		return fmt.Errorf("chown %s to %s: %w", path, o.name, err)
	}
	return nil
}

// chownTree gives dir and everything in it to the owner, unless dir already belongs to it.
func (o owner) chownTree(dir string) error {
	if !o.dropRoot {
		return nil
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return fmt.Errorf("stat data directory: %w", err)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) == o.uid {
		return nil
	}
	return filepath.WalkDir(dir, func(path string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return o.chown(path)
	})
}

// checkSearchable reports a parent of dir that the owner cannot pass through. It matters when
// the process is root: a directory root made with mode 0700 (os.MkdirTemp does) hides the data
// directory from the postgres user, and the server would fail with a less helpful message.
func (o owner) checkSearchable(dir string) error {
	if !o.dropRoot {
		return nil
	}
	for p := filepath.Dir(dir); ; p = filepath.Dir(p) {
		fi, err := os.Stat(p)
		if err != nil {
			return fmt.Errorf("stat %s: %w", p, err)
		}
		if !o.canSearch(fi) {
			return fmt.Errorf("directory %s is not searchable by user %s (uid %d), which runs PostgreSQL: "+
				"choose a data directory elsewhere or `chmod o+x %s`", p, o.name, o.uid, p)
		}
		if p == filepath.Dir(p) {
			return nil
		}
	}
}

func (o owner) canSearch(fi fs.FileInfo) bool {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return true
	}
	perm := fi.Mode().Perm()
	switch {
	case int(st.Uid) == o.uid:
		return perm&0o100 != 0
	case int(st.Gid) == o.gid || slices.Contains(o.groups, int(st.Gid)):
		return perm&0o010 != 0
	default:
		return perm&0o001 != 0
	}
}
