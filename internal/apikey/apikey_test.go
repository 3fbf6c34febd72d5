package apikey_test

import (
	"bytes"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/convergence-dev/convergence/internal/apikey"
)

func TestNew_KeysAreWellFormedUniqueAndDigestMatches(t *testing.T) {
	t.Parallel()
	seen := map[string]bool{}
	for range 100 {
		key, digest := apikey.New()
		require.True(t, apikey.WellFormed(key), key)
		require.False(t, seen[key])
		seen[key] = true
		require.True(t, bytes.Equal(digest, apikey.Digest(key)))
		require.NotContains(t, string(digest), key)
	}
}

func TestWellFormed_RejectsGarbage(t *testing.T) {
	t.Parallel()
	key, _ := apikey.New()
	for _, bad := range []string{"", "sk_tenant_", "sk_live_" + key[10:], key + "x", key[:len(key)-1], strings.Replace(key, key[12:13], "!", 1)} {
		require.False(t, apikey.WellFormed(bad), bad)
	}
}

func TestDisplay_ShowsOnlyThePrefix(t *testing.T) {
	t.Parallel()
	key, _ := apikey.New()
	d := apikey.Display(key)
	require.True(t, strings.HasPrefix(key, strings.TrimSuffix(d, "…")))
	require.Len(t, strings.TrimSuffix(d, "…"), len(apikey.Prefix)+4)
}

func TestHandover_SealedToReceiver_OpensForThatTenantOnly(t *testing.T) {
	t.Parallel()
	r, err := apikey.NewReceiver()
	require.NoError(t, err)
	key, _ := apikey.New()
	sealed, err := apikey.SealTo(r.PublicKey(), 7, key)
	require.NoError(t, err)
	require.NotContains(t, string(sealed), key[len(apikey.Prefix):])

	got, err := r.Open(7, sealed)
	require.NoError(t, err)
	require.Equal(t, key, got)
	_, err = r.Open(8, sealed)
	require.Error(t, err, "bound to its tenant")
	other, err := apikey.NewReceiver()
	require.NoError(t, err)
	_, err = other.Open(7, sealed)
	require.Error(t, err, "only the receiver opens it")
	_, err = apikey.SealTo([]byte("short"), 7, key)
	require.Error(t, err)
}
