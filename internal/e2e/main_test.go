package e2e_test

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/convergence-dev/convergence/internal/pgtest"
	"github.com/convergence-dev/convergence/services/api/openapi"
)

// TestMain checks every call the tests make against the API's OpenAPI document.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(openapi.Checked(pgtest.Wrap(m)))
}
