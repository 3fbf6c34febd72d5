// Command gen writes the Grafana dashboards of package grafana as JSON into
// deploy/grafana/dashboards, and their list into deploy/grafana/README.md (`make dashboards`
// runs it from the repository's root).
package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/convergence-dev/convergence/deploy/grafana"
)

func main() {
	if err := run("deploy/grafana"); err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
}

func run(dir string) error {
	files, err := grafana.Render()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(dir, "dashboards"), 0o750); err != nil {
		return err
	}
	out := map[string][]byte{"README.md": grafana.Markdown()}
	for name, b := range files {
		out[filepath.Join("dashboards", name)] = b
	}
	for name, b := range out {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil { //nolint:gosec // Dashboards are public files of the repository.
			return err
		}
		fmt.Println("wrote", filepath.Join(dir, name))
	}
	return nil
}
