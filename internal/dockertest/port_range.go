package dockertest

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
)

// Port ranges come from blocks of portBlockSize ports between portRangeLow and portRangeHigh:
// below the kernel's ephemeral range (32768 and up), where FreePort and outgoing connections
// take theirs, and above the default tenant range (3001-3999).
const (
	portBlockSize = 32
	portRangeLow  = 20000
	portRangeHigh = 32000
)

// PortRange reserves n consecutive TCP ports (at most 32) for the test and returns the first
// and the last. Tests that need a range of their own, such as a provisioner's port pool whose
// lowest free port they check, get one that no other test of any test binary on this machine
// holds at the same time: each block is guarded by an exclusive lock file (flock, released
// when the test ends or its process dies), and its ports are probed free when it is taken.
func PortRange(t testing.TB, n int) (first, last int) {
	t.Helper()
	if n < 1 || n > portBlockSize {
		t.Fatalf("PortRange(%d): ask for 1 to %d ports", n, portBlockSize)
	}
	blocks := (portRangeHigh - portRangeLow) / portBlockSize
	start := rand.IntN(blocks) //nolint:gosec // Spreading tests over blocks needs no secure randomness.
	for i := range blocks {
		first := portRangeLow + ((start+i)%blocks)*portBlockSize
		lock, ok := lockBlock(t, first)
		if !ok {
			continue
		}
		if !allFree(first, portBlockSize) {
			_ = lock.Close()
			continue
		}
		t.Cleanup(func() { _ = lock.Close() }) // closing releases the lock
		return first, first + n - 1
	}
	t.Fatalf("PortRange: every block of %d ports between %d and %d is taken or in use", portBlockSize, portRangeLow, portRangeHigh)
	return 0, 0
}

// lockBlock takes the lock of the block starting at first without waiting.
func lockBlock(t testing.TB, first int) (*os.File, bool) {
	path := filepath.Join(os.TempDir(), "convergence-ports-"+strconv.Itoa(first)+".lock")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatalf("PortRange: open lock file: %v", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		_ = f.Close()
		return nil, false
	}
	return f, true
}

// allFree reports whether every port of [first, first+n) can be bound on 127.0.0.1 now.
func allFree(first, n int) bool {
	for p := first; p < first+n; p++ {
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p)) //nolint:noctx // A bind probe has nothing to cancel.
		if err != nil {
			return false
		}
		_ = ln.Close()
	}
	return true
}
