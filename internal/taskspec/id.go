package taskspec

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"time"
)

// idPrefix starts every task ID.
const idPrefix = "tsk_"

// idLen is the length of a task ID: the prefix, 12 hex digits of milliseconds since the epoch,
// and 20 random hex digits.
const idLen = len(idPrefix) + 12 + 20

// NewID returns a new task ID. IDs sort by creation time, which keeps the primary key's inserts
// at the right edge of its index, and carry 80 random bits, so they cannot be guessed.
func NewID() string {
	var r [10]byte
	_, _ = rand.Read(r[:]) // crypto/rand.Read never returns an error since Go 1.24.
	return fmt.Sprintf("%s%012x%s", idPrefix, time.Now().UnixMilli(), hex.EncodeToString(r[:]))
}

// ValidID reports whether id has the form of a task ID. Anything else cannot name a task, and
// must not reach a NATS subject, where '.', '*' and '>' have meaning.
func ValidID(id string) bool {
	if len(id) != idLen || id[:len(idPrefix)] != idPrefix {
		return false
	}
	for i := len(idPrefix); i < len(id); i++ {
		c := id[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}
