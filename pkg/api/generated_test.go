package api_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestTypesAreGeneratedFromTheDocument fails when types.gen.go is not what oapi-codegen makes
// of openapi.yaml today: someone changed the document without `make generate`, or edited the
// generated file by hand.
func TestTypesAreGeneratedFromTheDocument(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs oapi-codegen")
	}
	out := filepath.Join(t.TempDir(), "types.gen.go")
	cmd := exec.CommandContext(t.Context(), "go", "tool", "oapi-codegen", "-config", "oapi-codegen.yaml", "-o", out, "openapi.yaml")
	if output, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("oapi-codegen: %v\n%s", err, output)
	}
	want, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile("types.gen.go")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("types.gen.go is stale: openapi.yaml says otherwise; run `make generate` and commit the result")
	}
}
