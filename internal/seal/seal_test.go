package seal_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/convergence-dev/convergence/internal/seal"
)

func TestSeal_OpensOnlyWhereSealedAndAfterRotation(t *testing.T) {
	t.Parallel()
	old := seal.NewKeyLine()
	k, err := seal.Parse([]byte("# a comment\n" + old + "\n"))
	require.NoError(t, err)

	sealed := k.Seal("whsec_secret", "webhook-secret/1")
	require.True(t, strings.HasPrefix(sealed, "sealed:v1:k"))
	require.NotContains(t, sealed, "whsec_secret")
	require.NotEqual(t, sealed, k.Seal("whsec_secret", "webhook-secret/1"), "a new nonce each time")
	got, err := k.Open(sealed, "webhook-secret/1")
	require.NoError(t, err)
	require.Equal(t, "whsec_secret", got)

	_, err = k.Open(sealed, "webhook-secret/2")
	require.ErrorContains(t, err, "does not open", "a value moved to another row does not open")
	tampered := sealed[:len(sealed)-2] + "AA"
	_, err = k.Open(tampered, "webhook-secret/1")
	require.Error(t, err)

	plain, err := k.Open("whsec_from_before", "webhook-secret/1")
	require.NoError(t, err, "a value from before sealing reads as it is")
	require.Equal(t, "whsec_from_before", plain)
	require.True(t, k.NeedsReseal("whsec_from_before"))
	require.False(t, k.NeedsReseal(sealed))

	// Rotation: a new key first; the old one still opens.
	rotated, err := seal.Parse([]byte(seal.NewKeyLine() + "\n" + old + "\n"))
	require.NoError(t, err)
	got, err = rotated.Open(sealed, "webhook-secret/1")
	require.NoError(t, err)
	require.Equal(t, "whsec_secret", got)
	require.True(t, rotated.NeedsReseal(sealed))
	require.False(t, rotated.NeedsReseal(rotated.Seal("x", "c")))

	// Once the old key is dropped, its values no longer open.
	_, err = seal.Generate().Open(sealed, "webhook-secret/1")
	require.ErrorIs(t, err, seal.ErrUnknownKey)
}

func TestParse_BadKeyrings_ErrorSaysWhat(t *testing.T) {
	t.Parallel()
	line := seal.NewKeyLine()
	id, _, _ := strings.Cut(line, " ")
	for _, tc := range []struct{ name, data, want string }{
		{"empty", "# nothing\n", "no key"},
		{"no key", "k1\n", "want"},
		{"short key", "k1 AAAA\n", "32 random bytes"},
		{"bad id", "k/1 " + strings.SplitN(line, " ", 2)[1] + "\n", "letters, digits"},
		{"same id twice", line + "\n" + line + "\n", "key id " + id + " is used twice"},
	} {
		_, err := seal.Parse([]byte(tc.data))
		require.ErrorContains(t, err, tc.want, tc.name)
	}
}
