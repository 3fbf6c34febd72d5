package e2e_test

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/convergence-dev/convergence/internal/pgtest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(pgtest.Wrap(m))
}
