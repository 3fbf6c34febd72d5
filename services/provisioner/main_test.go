package provisioner_test

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/convergence-dev/convergence/internal/pgtest"
)

func TestMain(m *testing.M) {
	// The service, its live server, the watcher and log streams start goroutines; none may
	// outlive its test.
	goleak.VerifyTestMain(pgtest.Wrap(m))
}
