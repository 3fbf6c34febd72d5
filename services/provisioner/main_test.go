package provisioner_test

import (
	"fmt"
	"os"
	"testing"

	"go.uber.org/goleak"

	"github.com/convergence-dev/convergence/internal/pgtest"
	"github.com/convergence-dev/convergence/services/provisioner/runtime/swarmtest"
)

func TestMain(m *testing.M) {
	// The service, its live server, the watcher and log streams start goroutines; none may
	// outlive its test.
	goleak.VerifyTestMain(leavingSwarm{pgtest.Wrap(m)})
}

// leavingSwarm runs the tests, then leaves the swarm the swarm tests made (swarmtest.Teardown),
// so the engine ends as the tests found it.
type leavingSwarm struct{ m interface{ Run() int } }

func (l leavingSwarm) Run() int {
	code := l.m.Run()
	if err := swarmtest.Teardown(); err != nil {
		fmt.Fprintf(os.Stderr, "swarm teardown: %v\n", err)
		code = 1
	}
	return code
}
