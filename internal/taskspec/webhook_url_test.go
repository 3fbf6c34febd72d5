package taskspec_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/convergence-dev/convergence/internal/taskspec"
)

func TestValidateWebhookURL_SaysWhatToFix(t *testing.T) {
	t.Parallel()
	ok := []string{"https://example.com/hooks", "http://example.com:8080/x?y=1", "https://[2001:db8::1]/h"}
	for _, u := range ok {
		require.NoError(t, taskspec.ValidateWebhookURL(u), u)
	}
	bad := map[string]string{
		"ftp://example.com/x":            "http or https",
		"example.com/hooks":              "http or https",
		"https:///nohost":                "no host",
		"https://user:pass@example.com/": "credentials",
		"https://example.com/#frag":      "fragment",
		"https://example.com:99999/":     "port",
		"https://exa mple.com/":          "spaces",
		"https://example.com/" + strings.Repeat("a", taskspec.MaxWebhookURLLength): "at most 2048",
	}
	for u, want := range bad {
		err := taskspec.ValidateWebhookURL(u)
		require.Error(t, err, u)
		require.Contains(t, err.Error(), want, u)
	}
}
