package runtime_test

import (
	"fmt"
	"os"
	"testing"

	"go.uber.org/goleak"

	"github.com/convergence-dev/convergence/services/provisioner/runtime/swarmtest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	// The swarm goes before the leak check: the engine must end as the tests found it
	// whatever they did.
	if err := swarmtest.Teardown(); err != nil {
		fmt.Fprintf(os.Stderr, "swarm teardown: %v\n", err)
		code = 1
	}
	// Logs, Events and WaitHealthy start goroutines; none may outlive its test.
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}
