package apikey

import (
	"crypto/ecdh"
	"crypto/hpke"
	"fmt"
	"strconv"
)

// A tenant's key is made by the provisioner, which owns tenants, and shown once to the
// operator who asked for the tenant through the API. On its way over the bus it is sealed:
// the API makes a Receiver for each spawn and sends its public key with the admission request,
// the provisioner seals the new key to it (SealTo) in its answer, and only that Receiver opens
// it. The suite is HPKE (RFC 9180): X25519, HKDF-SHA256, AES-256-GCM, bound to the tenant.

func suite() (hpke.KEM, hpke.KDF, hpke.AEAD) {
	return hpke.DHKEM(ecdh.X25519()), hpke.HKDFSHA256(), hpke.AES256GCM()
}

// handoverInfo binds a sealed key to its tenant.
func handoverInfo(envID int64) []byte {
	return []byte("convergence tenant api key handover v1; env " + strconv.FormatInt(envID, 10))
}

// Receiver opens one key sealed to it. It lives for one request and is never stored.
type Receiver struct {
	priv hpke.PrivateKey
}

// NewReceiver makes a receiver with a fresh key pair.
func NewReceiver() (*Receiver, error) {
	kem, _, _ := suite()
	priv, err := kem.GenerateKey()
	if err != nil {
		return nil, fmt.Errorf("generate handover key: %w", err)
	}
	return &Receiver{priv: priv}, nil
}

// PublicKey is what the sender seals to.
func (r *Receiver) PublicKey() []byte { return r.priv.PublicKey().Bytes() }

// Open returns the key of tenant envID that sealed holds.
func (r *Receiver) Open(envID int64, sealed []byte) (string, error) {
	_, kdf, aead := suite()
	key, err := hpke.Open(r.priv, kdf, aead, handoverInfo(envID), sealed)
	if err != nil {
		return "", fmt.Errorf("open the key of tenant %d: %w", envID, err)
	}
	return string(key), nil
}

// SealTo seals tenant envID's key to a Receiver's public key.
func SealTo(publicKey []byte, envID int64, key string) ([]byte, error) {
	kem, kdf, aead := suite()
	pub, err := kem.NewPublicKey(publicKey)
	if err != nil {
		return nil, fmt.Errorf("handover key: %w", err)
	}
	sealed, err := hpke.Seal(pub, kdf, aead, handoverInfo(envID), []byte(key))
	if err != nil {
		return nil, fmt.Errorf("seal the key of tenant %d: %w", envID, err)
	}
	return sealed, nil
}
