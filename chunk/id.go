package chunk

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"sync"
)

// IDSize is the length in bytes of a blob ID.
const IDSize = 32

// ID names a blob: HMAC-SHA-256 of its plaintext under the repository's
// ID key. Keying means an ID reveals nothing about content to someone
// without the key (no confirmation-of-file attacks on the store).
type ID [IDSize]byte

// String is the full lower-case hex form.
func (id ID) String() string { return hex.EncodeToString(id[:]) }

// Short is the 8-hex-digit prefix used in messages and listings.
func (id ID) Short() string { return hex.EncodeToString(id[:4]) }

// IsNull reports whether id is the zero ID, which never names a blob.
func (id ID) IsNull() bool { return id == ID{} }

// MarshalText encodes the ID as hex (for JSON documents).
func (id ID) MarshalText() ([]byte, error) { return []byte(id.String()), nil }

// UnmarshalText parses a hex ID.
func (id *ID) UnmarshalText(b []byte) error {
	p, err := ParseID(string(b))
	if err != nil {
		return err
	}
	*id = p
	return nil
}

// ParseID parses the full hex form of an ID.
func ParseID(s string) (ID, error) {
	var id ID
	if len(s) != 2*IDSize {
		return id, fmt.Errorf("invalid ID %q: want %d hex digits", s, 2*IDSize)
	}
	if _, err := hex.Decode(id[:], []byte(s)); err != nil {
		return id, fmt.Errorf("invalid ID %q: %w", s, err)
	}
	return id, nil
}

// Hasher computes keyed blob IDs. It is safe for concurrent use.
//
// HMAC-SHA-256 was chosen over keyed BLAKE2b by BenchmarkIDHash on the
// project machines: SHA-256 has hardware support there and ran about twice
// as fast (see docs/explanation/design.md).
type Hasher struct {
	pool sync.Pool
}

// NewHasher returns a hasher keyed with key (32 random bytes from the
// repository's master key).
func NewHasher(key []byte) *Hasher {
	k := append([]byte(nil), key...)
	return &Hasher{pool: sync.Pool{New: func() any { return hmac.New(sha256.New, k) }}}
}

// ID returns the keyed hash of data.
func (h *Hasher) ID(data []byte) ID { return h.sum(data) }

// sum is the keyed hash of the concatenation of parts.
func (h *Hasher) sum(parts ...[]byte) ID {
	m := h.pool.Get().(hash.Hash)
	m.Reset()
	for _, p := range parts {
		m.Write(p)
	}
	var id ID
	m.Sum(id[:0])
	h.pool.Put(m)
	return id
}
