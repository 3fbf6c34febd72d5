package architecture_test

import (
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

const module = "github.com/convergence-dev/convergence"

// TestServices_ImportNoOtherServicesPackages reads the imports of every non-test file under
// services/ (tests wire several services together, as main does).
func TestServices_ImportNoOtherServicesPackages(t *testing.T) {
	root, err := filepath.Abs(filepath.Join("..", "..", "services"))
	require.NoError(t, err)
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
			t.Errorf("%s imports %s: another service's package; move what they share to pkg/ or internal/, or ask that service on the bus", rel, p)
		}
		return nil
	})
	require.NoError(t, err)
}
