package pglocal_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/convergence-dev/convergence/internal/pglocal"
)

// helperDirEnv, when set, makes the test binary a helper process that starts a server in the
// named directory, prints its URL, and waits to be killed.
const helperDirEnv = "PGLOCAL_TEST_HELPER_DIR"

func TestMain(m *testing.M) {
	if dir := os.Getenv(helperDirEnv); dir != "" {
		os.Exit(runHelper(dir))
	}
	goleak.VerifyTestMain(m)
}

// initCache is the init cache that pgtest uses too, so that most tests copy a cluster instead
// of running initdb.
func initCache() string {
	return filepath.Join(os.TempDir(), fmt.Sprintf("convergence-pgtest-%d", os.Geteuid()), "cache")
}

func runHelper(dir string) int {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := pglocal.Start(ctx, pglocal.Config{Dir: dir, NoSync: true, InitCache: initCache()})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println(s.URL())
	<-ctx.Done() // the test kills this process long before
	return 1
}
