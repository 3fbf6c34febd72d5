// Package seal encrypts the secrets the platform must read back (tenants' webhook signing
// secrets) under key-encryption keys kept outside the database, so that a copy of the database
// alone does not give them away.
//
// A sealed value is text, "sealed:v1:<key id>:<base64 of nonce and ciphertext>", encrypted with
// AES-256-GCM under one key of a [Keyring] and bound to a context string (the row it belongs
// to), so that it opens only there. The keyring's first key seals; every key in it opens, so
// that after a new key is put first the old values still open until they are sealed again
// under it ([Keyring.NeedsReseal]).
package seal

import (
	"bufio"
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
)

// prefix starts every sealed value; what does not start with it is a value from before sealing.
const prefix = "sealed:v1:"

// keySize is the size of a key: AES-256.
const keySize = 32

// Keyring holds the key-encryption keys: the first seals, all of them open.
type Keyring struct {
	current string
	aeads   map[string]cipher.AEAD
}

// ErrUnknownKey means a value was sealed under a key the keyring does not hold.
var ErrUnknownKey = errors.New("sealed under a key the keyring does not hold")

// Parse reads a keyring: one key per line, "<id> <base64 of 32 random bytes>", the first line
// the key that seals. Blank lines and lines starting with # are skipped. A key id is 1 to 32
// letters, digits, '-' or '_'.
func Parse(data []byte) (*Keyring, error) {
	k := &Keyring{aeads: map[string]cipher.AEAD{}}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		id, encoded, ok := strings.Cut(line, " ")
		if !ok || !validID(id) {
			return nil, fmt.Errorf("key line %d: want \"<id> <base64 key>\" with an id of letters, digits, - or _", n)
		}
		key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(encoded))
		if err != nil || len(key) != keySize {
			return nil, fmt.Errorf("key line %d (%s): want the base64 of %d random bytes", n, id, keySize)
		}
		if _, dup := k.aeads[id]; dup {
			return nil, fmt.Errorf("key line %d: key id %s is used twice", n, id)
		}
		block, err := aes.NewCipher(key)
		if err != nil {
			return nil, err
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, err
		}
		k.aeads[id] = aead
		if k.current == "" {
			k.current = id
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if k.current == "" {
		return nil, errors.New("the keyring holds no key")
	}
	return k, nil
}

func validID(id string) bool {
	if id == "" || len(id) > 32 {
		return false
	}
	return strings.IndexFunc(id, func(r rune) bool {
		return (r < 'a' || r > 'z') && (r < 'A' || r > 'Z') && (r < '0' || r > '9') && r != '-' && r != '_'
	}) < 0
}

// NewKeyLine returns a keyring line with a new random key and id, to put first in a keyring
// file when rotating.
func NewKeyLine() string {
	var id [4]byte
	key := make([]byte, keySize)
	_, _ = rand.Read(id[:]) // crypto/rand.Read never returns an error since Go 1.24.
	_, _ = rand.Read(key)
	return "k" + hex.EncodeToString(id[:]) + " " + base64.StdEncoding.EncodeToString(key)
}

// Generate returns a keyring of one new random key, held only in memory.
func Generate() *Keyring {
	key := make([]byte, keySize)
	_, _ = rand.Read(key)
	block, _ := aes.NewCipher(key)  // fails only for a key of another size
	aead, _ := cipher.NewGCM(block) // fails only for a block size other than AES's
	return &Keyring{current: "generated", aeads: map[string]cipher.AEAD{"generated": aead}}
}

// LoadFile reads the keyring in path.
func LoadFile(path string) (*Keyring, error) {
	data, err := os.ReadFile(path) //nolint:gosec // The operator names the file.
	if err != nil {
		return nil, fmt.Errorf("secrets keyring: %w", err)
	}
	k, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("secrets keyring %s: %w", path, err)
	}
	return k, nil
}

// LoadOrCreateFile reads the keyring in path, or writes a new one of one key there (mode 0600)
// when there is none.
func LoadOrCreateFile(path string) (*Keyring, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600) //nolint:gosec // As above.
	switch {
	case errors.Is(err, os.ErrExist):
		return LoadFile(path)
	case err != nil:
		return nil, fmt.Errorf("secrets keyring: %w", err)
	}
	line := "# Secrets keyring: the first key seals, every key opens. To rotate, put a new line\n" +
		"# first (convergence secrets new-key prints one), then run convergence secrets reseal.\n" + NewKeyLine() + "\n"
	if _, err := f.WriteString(line); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("write secrets keyring: %w", err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("write secrets keyring: %w", err)
	}
	return LoadFile(path)
}

// Seal encrypts plaintext under the current key, bound to context.
func (k *Keyring) Seal(plaintext, context string) string {
	aead := k.aeads[k.current]
	nonce := make([]byte, aead.NonceSize())
	_, _ = rand.Read(nonce)
	out := aead.Seal(nonce, nonce, []byte(plaintext), []byte(context))
	return prefix + k.current + ":" + base64.RawStdEncoding.EncodeToString(out)
}

// Open decrypts value, which must have been sealed for context. A value from before sealing
// (without the sealed prefix) is returned as it is, so that it keeps working until it is
// sealed again.
func (k *Keyring) Open(value, context string) (string, error) {
	rest, ok := strings.CutPrefix(value, prefix)
	if !ok {
		return value, nil
	}
	id, encoded, ok := strings.Cut(rest, ":")
	if !ok {
		return "", errors.New("malformed sealed value")
	}
	aead, ok := k.aeads[id]
	if !ok {
		return "", fmt.Errorf("key %s: %w", id, ErrUnknownKey)
	}
	raw, err := base64.RawStdEncoding.DecodeString(encoded)
	if err != nil || len(raw) < aead.NonceSize() {
		return "", errors.New("malformed sealed value")
	}
	plain, err := aead.Open(nil, raw[:aead.NonceSize()], raw[aead.NonceSize():], []byte(context))
	if err != nil {
		return "", errors.New("sealed value does not open: altered, or sealed for another row")
	}
	return string(plain), nil
}

// NeedsReseal reports whether value is not sealed under the current key: from before sealing,
// or under an older key.
func (k *Keyring) NeedsReseal(value string) bool {
	return !strings.HasPrefix(value, prefix+k.current+":")
}
