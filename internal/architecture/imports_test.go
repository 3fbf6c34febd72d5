package architecture_test

import (
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

const module = "github.com/convergence-dev/convergence"

// crossServiceImports are the imports of one service's packages by another's that are left to
// undo, each until its contract moves to pkg/ or internal/. The test fails on any other, and on
// one of these that is gone, so the list only shrinks.
var crossServiceImports = []string{
	"services/api -> services/converger/engine",  // converge request validation
	"services/api -> services/converger/tasks",   // task IDs, views, progress messages
	"services/api -> services/converger/webhook", // webhook URL validation
}

// TestServices_ImportNoOtherServicesPackages reads the imports of every non-test file under
// services/ (tests wire several services together, as main does).
func TestServices_ImportNoOtherServicesPackages(t *testing.T) {
	root, err := filepath.Abs(filepath.Join("..", "..", "services"))
	require.NoError(t, err)
	seen := map[string]bool{}
	fset := token.NewFileSet()
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return err
		}
		rel, err := filepath.Rel(filepath.Dir(root), path)
		if err != nil {
			return err
		}
		service := strings.Join(strings.Split(filepath.ToSlash(rel), "/")[:2], "/") // services/<name>
		f, err := parser.ParseFile(fset, path, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		for _, imp := range f.Imports {
			p, err := strconv.Unquote(imp.Path.Value)
			if err != nil {
				return err
			}
			target, ok := strings.CutPrefix(p, module+"/")
			if !ok || !strings.HasPrefix(target, "services/") || target == service || strings.HasPrefix(target, service+"/") {
				continue
			}
			seen[service+" -> "+target] = true
			require.Contains(t, crossServiceImports, service+" -> "+target,
				"%s imports %s: another service's package; move what they share to pkg/ or internal/, or ask that service on the bus", rel, p)
		}
		return nil
	})
	require.NoError(t, err)
	for _, imp := range crossServiceImports {
		require.True(t, seen[imp], "%s is no longer imported: take it off crossServiceImports", imp)
	}
	require.True(t, slices.IsSorted(crossServiceImports))
}
