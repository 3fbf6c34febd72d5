package pgtest

import (
	"fmt"
	"os"
)

// TestingM is what TestMain runs: *testing.M, or a wrapper of it. goleak.VerifyTestMain
// accepts it too.
type TestingM interface {
	Run() int
}

// Wrap returns m with a Run that, after the tests, stops the local PostgreSQL server that New
// started for this test binary and removes its data. The server is started lazily by the first
// New, so a run that needs no database starts none. A failure to stop turns a passing exit
// code into 1.
func Wrap(m TestingM) TestingM {
	return wrapped{m: m}
}

type wrapped struct {
	m TestingM
}

func (w wrapped) Run() int {
	code := w.m.Run()
	if err := shared.close(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		if code == 0 {
			code = 1
		}
	}
	return code
}
