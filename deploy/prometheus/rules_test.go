// Package prometheus_test checks the alert rules with Prometheus's own tool: the rules load,
// and every rule behaves as its unit tests in rules/convergence_test.yml say. That the metrics
// the rules name exist is checked against a running platform in internal/platform.
package prometheus_test

import (
	"os/exec"
	"testing"
)

func TestRules_LoadAndPassTheirUnitTests(t *testing.T) {
	t.Parallel()
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		// make deps unpacks it here.
		if promtool, err = exec.LookPath("../../bin/tools/promtool"); err != nil {
			t.Fatal("promtool is neither on PATH nor in bin/tools: run make deps")
		}
	}
	for _, args := range [][]string{
		{"check", "rules", "rules/convergence.yml"},
		{"test", "rules", "rules/convergence_test.yml"},
	} {
		out, err := exec.Command(promtool, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("promtool %v: %v\n%s", args, err, out)
		}
	}
}
