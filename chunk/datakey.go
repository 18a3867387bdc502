package chunk

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/hkdf"
	"crypto/sha256"
	"errors"
	"fmt"
	"sync"
)

// Data blobs of a format-2 repository (file and WAL contents) are sealed
// to the repository's X25519 public key, so that a write-only key, which
// holds only that public key, can store them but never open them again:
//
//	epk[32] | nonce[12] | AES-256-GCM(payload, additional data = blob ID)
//
// epk is an ephemeral public key; the AES key is
// HKDF-SHA-256(X25519(ephemeral private, repository public),
// salt = epk | repository public, info = dataKeyInfo). A writer keeps one
// ephemeral key for sealsPerDataKey blobs (one X25519 per 8 GiB of
// 128 KiB chunks instead of one per chunk), then forgets it: a copy of a
// writer's memory opens at most what it stored last.
const (
	EphemeralSize   = 32
	dataKeyInfo     = "pgvault data key v2"
	sealsPerDataKey = 1 << 16
	// openKeysMax bounds the readers' cache of derived keys (one per
	// writer session and rotation).
	openKeysMax = 4096
)

// ErrWriteOnly is matched by the error of opening a data blob with a
// write-only key: it can seal them, not open them.
var ErrWriteOnly = errors.New("this password opens a write-only key, which stores backups and WAL but cannot read them back")

// dataKeys seals and opens data blobs with keys agreed with X25519.
type dataKeys struct {
	pub  *ecdh.PublicKey
	priv *ecdh.PrivateKey // nil for a write-only key

	mu    sync.Mutex
	epk   []byte
	aead  cipher.AEAD
	seals int

	openMu sync.RWMutex
	opened map[[EphemeralSize]byte]cipher.AEAD
}

func newDataKeys(pub, priv []byte) (*dataKeys, error) {
	curve := ecdh.X25519()
	d := &dataKeys{opened: map[[EphemeralSize]byte]cipher.AEAD{}}
	var err error
	if d.pub, err = curve.NewPublicKey(pub); err != nil {
		return nil, fmt.Errorf("codec: data public key: %w", err)
	}
	if priv != nil {
		if d.priv, err = curve.NewPrivateKey(priv); err != nil {
			return nil, fmt.Errorf("codec: data private key: %w", err)
		}
		if !d.priv.PublicKey().Equal(d.pub) {
			return nil, errors.New("codec: the data private key does not match the public key")
		}
	}
	return d, nil
}

// derive returns the AEAD for the key agreed between an ephemeral key and
// the repository's key (secret is their X25519 result).
func (d *dataKeys) derive(secret, epk []byte) (cipher.AEAD, error) {
	salt := append(append([]byte{}, epk...), d.pub.Bytes()...)
	key, err := hkdf.Key(sha256.New, secret, salt, dataKeyInfo, 32)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// sealKey returns the current ephemeral public key and its AEAD, drawing
// a new pair every sealsPerDataKey seals.
func (d *dataKeys) sealKey() ([]byte, cipher.AEAD, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.aead == nil || d.seals >= sealsPerDataKey {
		esk, err := ecdh.X25519().GenerateKey(nil)
		if err != nil {
			return nil, nil, fmt.Errorf("draw an ephemeral key: %w", err)
		}
		secret, err := esk.ECDH(d.pub)
		if err != nil {
			return nil, nil, fmt.Errorf("agree a data key: %w", err)
		}
		epk := esk.PublicKey().Bytes()
		aead, err := d.derive(secret, epk)
		if err != nil {
			return nil, nil, fmt.Errorf("derive a data key: %w", err)
		}
		d.epk, d.aead, d.seals = epk, aead, 0
	}
	d.seals++
	return d.epk, d.aead, nil
}

// openKey returns the AEAD of the blob sealed with ephemeral key epk, or
// a reason it cannot be had.
func (d *dataKeys) openKey(epk []byte) (cipher.AEAD, string) {
	if d.priv == nil {
		return nil, ErrWriteOnly.Error()
	}
	var k [EphemeralSize]byte
	copy(k[:], epk)
	d.openMu.RLock()
	aead := d.opened[k]
	d.openMu.RUnlock()
	if aead != nil {
		return aead, ""
	}
	pub, err := ecdh.X25519().NewPublicKey(epk)
	if err != nil {
		return nil, "bad ephemeral key"
	}
	secret, err := d.priv.ECDH(pub)
	if err != nil {
		return nil, "bad ephemeral key"
	}
	if aead, err = d.derive(secret, epk); err != nil {
		return nil, "derive the data key: " + err.Error()
	}
	d.openMu.Lock()
	if len(d.opened) >= openKeysMax {
		clear(d.opened)
	}
	d.opened[k] = aead
	d.openMu.Unlock()
	return aead, ""
}

// WriteOnly reports whether the codec seals data blobs it cannot open.
func (c *Codec) WriteOnly() bool { return c.data != nil && c.data.priv == nil }

// SealData seals a data blob (file or WAL content): to the repository's
// public key in a format-2 repository, else as Seal does.
func (c *Codec) SealData(dst []byte, id ID, plain []byte) ([]byte, error) {
	if c.data == nil {
		return c.seal(dst, c.aead, id[:], plain), nil
	}
	epk, aead, err := c.data.sealKey()
	if err != nil {
		return nil, err
	}
	return c.seal(append(dst, epk...), aead, id[:], plain), nil
}

// OpenData opens a blob sealed by SealData. With a write-only key the
// error matches ErrWriteOnly (and not ErrCorrupt).
func (c *Codec) OpenData(dst []byte, id ID, sealed []byte) ([]byte, error) {
	if c.data == nil {
		return c.Open(dst, id, sealed)
	}
	if len(sealed) < EphemeralSize+NonceSize+TagSize+1 {
		return nil, &BlobError{ID: id, Reason: fmt.Sprintf("truncated (%d bytes)", len(sealed))}
	}
	aead, reason := c.data.openKey(sealed[:EphemeralSize])
	if aead == nil {
		if c.data.priv == nil {
			return nil, fmt.Errorf("blob %s: %w", id.Short(), ErrWriteOnly)
		}
		return nil, &BlobError{ID: id, Reason: reason}
	}
	out, reason := c.open(dst, aead, id[:], sealed[EphemeralSize:])
	if reason != "" {
		return nil, &BlobError{ID: id, Reason: reason}
	}
	return out, nil
}
