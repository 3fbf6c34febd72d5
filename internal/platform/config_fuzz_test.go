package platform_test

import (
	"flag"
	"io"
	"testing"

	"github.com/convergence-dev/convergence/internal/platform"
)

// FuzzConfig sets any flag of the platform to any value and validates the configuration: a
// value is refused with an error, or taken, and never makes validation panic (a division by
// zero, an index out of range). `go test` runs the seeds; `go test -fuzz FuzzConfig` searches
// further.
func FuzzConfig(f *testing.F) {
	for _, seed := range []struct {
		flag  uint
		value string
	}{{0, "0"}, {1, "-1"}, {2, "0s"}, {3, "1ns"}, {4, "99999999999999"}, {5, ""}, {6, "a-b"}, {7, "1-0"}, {8, "65536-65535"}, {9, "NaN"}} {
		f.Add(seed.flag, seed.value, uint(0), "")
	}
	f.Fuzz(func(t *testing.T, first uint, firstValue string, second uint, secondValue string) {
		var cfg platform.Config
		fs := flag.NewFlagSet("fuzz", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		cfg.RegisterFlags(fs)
		var names []string
		fs.VisitAll(func(fl *flag.Flag) { names = append(names, fl.Name) })
		_ = fs.Set(names[first%uint(len(names))], firstValue)
		_ = fs.Set(names[second%uint(len(names))], secondValue)
		_ = cfg.Validate() // An error is a fine answer; a panic is not.
	})
}
