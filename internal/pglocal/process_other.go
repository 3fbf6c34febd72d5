//go:build unix && !linux

package pglocal

import (
	"errors"
	"syscall"
)

// sysProcAttr makes a child run as o, in its own process group, so that a terminal's Ctrl-C
// reaches only us. Outside Linux there is no parent-death signal: a server whose parent is
// killed keeps running until stopped by hand, and the next Start reports ErrInUse.
func sysProcAttr(o owner) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Credential: o.credential(), Setpgid: true}
}

// serverRunning reports whether pid is alive. Without /proc it cannot tell a postgres from
// another process that reused the PID, so it errs on the side of "running".
func serverRunning(pid int, _ string) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}
