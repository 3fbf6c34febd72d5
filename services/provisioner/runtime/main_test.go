package runtime_test

import (
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	// Logs, Events and WaitHealthy start goroutines; none may outlive its test.
	goleak.VerifyTestMain(m)
}
