// Package keyring keeps tenant API keys for the provisioner without the platform ever storing
// one in plaintext.
//
// Authentication needs only a key's SHA-256 digest, which is what the API keeps. The
// provisioner, though, must put the key itself into the tenant's container, and again whenever
// it recreates that container. So when it admits a tenant it seals the new key ([Seal]) to
// every provisioner public key registered in the database, with HPKE (RFC 9180: X25519,
// HKDF-SHA256, AES-256-GCM) bound to the tenant's env id, and only a provisioner, which holds
// the private key in its key file ([LoadOrCreate]), can open it ([Keyring.OpenFor]). Every
// replica of the provisioner must use the same key file; a new key file only opens keys sealed
// after it was registered.
package keyring

import (
	"context"
	"crypto/ecdh"
	"crypto/hpke"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

var (
	// ErrNoRecipients means no provisioner has registered a key yet, so a new tenant key
	// cannot be sealed: start the provisioner once.
	ErrNoRecipients = errors.New("no provisioner key registered")
	// ErrNotSealed means the tenant has no key sealed to this provisioner's key: it was
	// sealed before this key was registered, to another key file.
	ErrNotSealed = errors.New("tenant key not sealed to this provisioner")
)

// fileHeader starts a key file, so a wrong file is told apart from a damaged one.
const fileHeader = "convergence-provisioner-key-v1"

// DB is what the keyring needs of a database handle; a pool, a connection and a transaction
// all have it.
type DB interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// suite is the HPKE cipher suite of every sealed key.
func suite() (hpke.KEM, hpke.KDF, hpke.AEAD) {
	return hpke.DHKEM(ecdh.X25519()), hpke.HKDFSHA256(), hpke.AES256GCM()
}

// info binds a sealed key to its tenant, so a sealed key copied to another tenant's row does
// not open.
func info(envID int64) []byte {
	return []byte("convergence tenant api key v1; env " + strconv.FormatInt(envID, 10))
}

// Keyring is a provisioner's sealing key. It is safe for concurrent use.
type Keyring struct {
	id   string
	priv hpke.PrivateKey
}

// New returns a keyring with a fresh key, held in memory only (tests use it).
func New() (*Keyring, error) {
	kem, _, _ := suite()
	priv, err := kem.GenerateKey()
	if err != nil {
		return nil, fmt.Errorf("generate sealing key: %w", err)
	}
	return fromPrivate(priv), nil
}

func fromPrivate(priv hpke.PrivateKey) *Keyring {
	sum := sha256.Sum256(priv.PublicKey().Bytes())
	return &Keyring{id: hex.EncodeToString(sum[:8]), priv: priv}
}

// LoadOrCreate reads the key file at path, or creates it (mode 0600, its directory 0700)
// with a fresh key when there is none. Two processes creating the same file at once end up
// with the same key: the file is created exclusively and the loser reads the winner's.
func LoadOrCreate(path string) (*Keyring, error) {
	if k, err := load(path); !errors.Is(err, fs.ErrNotExist) {
		return k, err
	}
	k, err := New()
	if err != nil {
		return nil, err
	}
	raw, err := k.priv.Bytes()
	if err != nil {
		return nil, fmt.Errorf("serialize sealing key: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("create key directory: %w", err)
	}
	// The key is written to a file of its own and then linked into place: a link fails if the
	// path exists, so of several first starts exactly one key wins, and nobody ever reads a
	// half-written file.
	tmp, err := os.CreateTemp(filepath.Dir(path), ".provisioner-key-*")
	if err != nil {
		return nil, fmt.Errorf("create key file: %w", err)
	}
	defer func() { _ = os.Remove(tmp.Name()) }()
	_, werr := fmt.Fprintf(tmp, "%s\n%s\n", fileHeader, base64.StdEncoding.EncodeToString(raw))
	if serr := tmp.Sync(); werr == nil {
		werr = serr
	}
	if cerr := tmp.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		return nil, fmt.Errorf("write key file: %w", werr)
	}
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return load(path)
		}
		return nil, fmt.Errorf("create key file: %w", err)
	}
	return k, nil
}

func load(path string) (*Keyring, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	header, body, _ := strings.Cut(string(b), "\n")
	if header != fileHeader {
		return nil, fmt.Errorf("key file %s is not a provisioner key file (no %q header)", path, fileHeader)
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(body))
	if err != nil {
		return nil, fmt.Errorf("key file %s is damaged: %w", path, err)
	}
	kem, _, _ := suite()
	priv, err := kem.NewPrivateKey(raw)
	if err != nil {
		return nil, fmt.Errorf("key file %s is damaged: %w", path, err)
	}
	return fromPrivate(priv), nil
}

// ID identifies the key: a digest of its public half.
func (k *Keyring) ID() string { return k.id }

// Register records the public key in the database, so new tenant keys are sealed to it.
// It is idempotent.
func (k *Keyring) Register(ctx context.Context, db DB) error {
	_, err := db.Exec(ctx, `
		INSERT INTO provisioner_keys (id, public_key) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING`,
		k.id, k.priv.PublicKey().Bytes())
	if err != nil {
		return fmt.Errorf("register provisioner key: %w", err)
	}
	return nil
}

// Seal seals apiKey for tenant envID to every registered provisioner key and stores the
// results in tenant_secrets, inside the caller's transaction. It wraps [ErrNoRecipients]
// when no provisioner key is registered.
func Seal(ctx context.Context, db DB, envID int64, apiKey string) error {
	rows, err := db.Query(ctx, `SELECT id, public_key FROM provisioner_keys ORDER BY id`)
	if err != nil {
		return fmt.Errorf("read provisioner keys: %w", err)
	}
	type recipient struct {
		id  string
		pub []byte
	}
	recipients, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (recipient, error) {
		var x recipient
		return x, r.Scan(&x.id, &x.pub)
	})
	if err != nil {
		return fmt.Errorf("read provisioner keys: %w", err)
	}
	if len(recipients) == 0 {
		return ErrNoRecipients
	}
	kem, kdf, aead := suite()
	for _, r := range recipients {
		pub, err := kem.NewPublicKey(r.pub)
		if err != nil {
			return fmt.Errorf("provisioner key %s: %w", r.id, err)
		}
		sealed, err := hpke.Seal(pub, kdf, aead, info(envID), []byte(apiKey))
		if err != nil {
			return fmt.Errorf("seal tenant key: %w", err)
		}
		if _, err := db.Exec(ctx, `
			INSERT INTO tenant_secrets (env_id, key_id, sealed) VALUES ($1, $2, $3)
			ON CONFLICT (env_id, key_id) DO UPDATE SET sealed = EXCLUDED.sealed`, envID, r.id, sealed); err != nil {
			return fmt.Errorf("store sealed tenant key: %w", err)
		}
	}
	return nil
}

// OpenFor returns tenant envID's API key, opened with this keyring. It wraps [ErrNotSealed]
// when no key is sealed to this keyring for the tenant.
func (k *Keyring) OpenFor(ctx context.Context, db DB, envID int64) (string, error) {
	var sealed []byte
	err := db.QueryRow(ctx, `SELECT sealed FROM tenant_secrets WHERE env_id = $1 AND key_id = $2`, envID, k.id).Scan(&sealed)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", fmt.Errorf("tenant %d: %w (key %s)", envID, ErrNotSealed, k.id)
	}
	if err != nil {
		return "", fmt.Errorf("read sealed tenant key: %w", err)
	}
	return k.Open(envID, sealed)
}

// Open opens a key sealed for tenant envID.
func (k *Keyring) Open(envID int64, sealed []byte) (string, error) {
	_, kdf, aead := suite()
	key, err := hpke.Open(k.priv, kdf, aead, info(envID), sealed)
	if err != nil {
		return "", fmt.Errorf("open sealed key of tenant %d: %w", envID, err)
	}
	return string(key), nil
}

// Forget deletes the sealed keys of tenant envID, once it needs none (it was destroyed).
func Forget(ctx context.Context, db DB, envID int64) error {
	if _, err := db.Exec(ctx, `DELETE FROM tenant_secrets WHERE env_id = $1`, envID); err != nil {
		return fmt.Errorf("forget sealed tenant key: %w", err)
	}
	return nil
}
