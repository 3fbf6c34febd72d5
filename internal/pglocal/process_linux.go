package pglocal

import (
	"os"
	"strconv"
	"strings"
	"syscall"
)

// sysProcAttr makes a child run as o, in its own process group (so that a terminal's Ctrl-C
// reaches only us), and die with SIGKILL when the thread that started it exits. The caller
// starts the child from a goroutine locked to its thread, which lives as long as the child, so
// in effect the child dies with this process. PostgreSQL is crash-safe, so SIGKILL loses no
// committed data; the next Start recovers.
func sysProcAttr(o owner) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{
		Credential: o.credential(),
		Setpgid:    true,
		Pdeathsig:  syscall.SIGKILL,
	}
}

// serverRunning reports whether pid is a live (not zombie) postgres process serving dir. When
// its working directory cannot be read (another user's process), a live postgres counts.
func serverRunning(pid int, dir string) bool {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// The format is "pid (comm) state ...", and comm may itself contain ") ".
	open, closing := strings.IndexByte(string(stat), '('), strings.LastIndexByte(string(stat), ')')
	if open < 0 || closing < open || len(stat) < closing+3 {
		return false
	}
	comm, state := string(stat[open+1:closing]), stat[closing+2]
	if comm != "postgres" && comm != "postmaster" || state == 'Z' || state == 'X' {
		return false
	}
	cwd, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/cwd")
	return err != nil || cwd == dir
}
