// Package apikey makes and checks tenant API keys. A key is "sk_tenant_" followed by 43
// characters of base64url (256 random bits). Only its SHA-256 digest is stored; the plaintext
// is shown once, when the tenant is created.
package apikey

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"strings"
)

// Prefix starts every tenant API key.
const Prefix = "sk_tenant_"

// keyLen is the length of a whole key: the prefix and 256 bits in unpadded base64url.
var keyLen = len(Prefix) + base64.RawURLEncoding.EncodedLen(32)

// New returns a new key and the digest to store for it.
func New() (key string, digest []byte) {
	var raw [32]byte
	_, _ = rand.Read(raw[:]) // crypto/rand.Read never returns an error since Go 1.24.
	key = Prefix + base64.RawURLEncoding.EncodeToString(raw[:])
	return key, Digest(key)
}

// Digest returns the SHA-256 digest under which key is stored and looked up.
func Digest(key string) []byte {
	sum := sha256.Sum256([]byte(key))
	return sum[:]
}

// WellFormed reports whether key has the shape of a tenant key, so that garbage is refused
// without a database lookup.
func WellFormed(key string) bool {
	if len(key) != keyLen || !strings.HasPrefix(key, Prefix) {
		return false
	}
	_, err := base64.RawURLEncoding.DecodeString(key[len(Prefix):])
	return err == nil
}

// Display returns the part of key that may be shown and logged: the prefix and four more
// characters.
func Display(key string) string {
	if len(key) < len(Prefix)+4 {
		return Prefix + "…"
	}
	return key[:len(Prefix)+4] + "…"
}
