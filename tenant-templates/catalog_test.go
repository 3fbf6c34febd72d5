package tenanttemplates_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	tenanttemplates "github.com/convergence-dev/convergence/tenant-templates"
)

func TestLookupTemplate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		language, framework string
		image               string
		err                 string
	}{
		{"go", "", tenanttemplates.GoImage, ""},
		{"go", "net-http", tenanttemplates.GoImage, ""},
		{"go", "gin", "", `framework "gin" is not a known template for go; use one of: net-http (or omit it for net-http)`},
		{"node", "", tenanttemplates.NodeImage, ""},
		{"node", "express", tenanttemplates.NodeImage, ""},
		{"node", "koa", "", `framework "koa" is not a known template for node; use one of: express (or omit it for express)`},
		{"python", "flask", tenanttemplates.PythonImage, ""},
		{"cobol", "", "", `language "cobol" is not a known template; use one of: go, node, python (or name a local image)`},
	}
	for _, tt := range tests {
		got, err := tenanttemplates.LookupTemplate(tt.language, tt.framework)
		if tt.err != "" {
			require.EqualError(t, err, tt.err)
			continue
		}
		require.NoError(t, err)
		require.Equal(t, tt.image, got.Image)
	}
	require.Equal(t, tenanttemplates.Templates()[0], tenanttemplates.DefaultTemplate())
}
