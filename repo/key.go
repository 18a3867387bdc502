package repo

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/crypto/argon2"

	"github.com/pgvault/pgvault/chunk"
	"github.com/pgvault/pgvault/repo/backend"
)

// KDFParams are argon2id's cost parameters, stored with each key.
type KDFParams struct {
	Time    uint32 `json:"time"`
	Memory  uint32 `json:"memory_kib"`
	Threads uint8  `json:"threads"`
}

// DefaultKDF is argon2id over 7 MiB with five passes and one lane, the
// last of OWASP's equally strong minimum settings (46 MiB/1 pass, 19/2,
// 12/3, 9/4, 7/5). Every uncached derivation runs in a new process on
// fresh memory, and there the kernel's page faults cost more than the
// passes: in a new process on the project machines (9 runs each, one
// lane), 19 MiB/2 took 59-77 ms, 12/3 45-67 ms, 9/4 42-52 ms and 7/5
// 39-47 ms. More lanes were slower still (19 MiB/2 with two lanes: 82-120
// ms), the lanes' faults contending. It was 19 MiB/2, 46 MiB/1 before
// that, and first 64 MiB, two passes, two lanes. The uncached derivation
// is paid by a first mount or restore on a new machine and by every
// command when the password comes from PGVAULT_PASSWORD. Each key file
// stores its own parameters, so repositories keep what they were created
// with.
func DefaultKDF() KDFParams { return KDFParams{Time: 5, Memory: 7 << 10, Threads: 1} }

// keyFile is the JSON document stored at keys/<id>.
type keyFile struct {
	Created  time.Time `json:"created"`
	Hostname string    `json:"hostname"`
	KDF      string    `json:"kdf"` // "argon2id" or "none"
	Params   KDFParams `json:"params"`
	Salt     []byte    `json:"salt,omitempty"`
	Data     []byte    `json:"data"` // GCM(nonce | sealed master key JSON), or the JSON itself for "none"
	// WriteOnly marks a key made by `repo key add --write-only`, for
	// listings: what makes it write-only is the master key it wraps,
	// which lacks DataKey.
	WriteOnly bool `json:"write_only,omitempty"`
}

// masterKey is what a key file protects.
type masterKey struct {
	EncKey     []byte    `json:"enc_key"`
	IDKey      []byte    `json:"id_key"`
	ChunkerPol chunk.Pol `json:"chunker_pol"`
	// DataPub and DataKey (format 2) are the X25519 key pair data blobs
	// are sealed to; a write-only key has DataPub only.
	DataPub []byte `json:"data_pub,omitempty"`
	DataKey []byte `json:"data_key,omitempty"`
}

// newMasterKey draws a master key; withData adds the data key pair of
// format 2.
func newMasterKey(withData bool) (*masterKey, error) {
	m := &masterKey{EncKey: make([]byte, 32), IDKey: make([]byte, 32)}
	rand.Read(m.EncKey)
	rand.Read(m.IDKey)
	pol, err := chunk.RandomPol()
	if err != nil {
		return nil, fmt.Errorf("draw chunker polynomial: %w", err)
	}
	m.ChunkerPol = pol
	if withData {
		k, err := ecdh.X25519().GenerateKey(nil)
		if err != nil {
			return nil, fmt.Errorf("draw the data key: %w", err)
		}
		m.DataKey, m.DataPub = k.Bytes(), k.PublicKey().Bytes()
	}
	return m, nil
}

// writeOnly is m without the data private key.
func (m *masterKey) writeOnly() *masterKey {
	c := *m
	c.DataKey = nil
	return &c
}

func deriveKey(password []byte, salt []byte, p KDFParams) []byte {
	return argon2.IDKey(password, salt, p.Time, p.Memory, p.Threads, 32)
}

// wrapKey seals master under a key derived from password.
func wrapKey(master *masterKey, password []byte, encrypted bool, p KDFParams) (*keyFile, []byte, error) {
	plain, err := json.Marshal(master)
	if err != nil {
		return nil, nil, err
	}
	host, _ := os.Hostname()
	kf := &keyFile{Created: time.Now().UTC(), Hostname: host}
	if !encrypted {
		kf.KDF, kf.Data = "none", plain
		return kf, nil, nil
	}
	kf.KDF, kf.Params = "argon2id", p
	kf.Salt = make([]byte, 16)
	rand.Read(kf.Salt)
	kek := deriveKey(password, kf.Salt, p)
	aead, err := keyAEAD(kek)
	if err != nil {
		return nil, nil, err
	}
	nonce := make([]byte, aead.NonceSize())
	rand.Read(nonce)
	kf.Data = aead.Seal(nonce, nonce, plain, []byte("pgvault key"))
	return kf, kek, nil
}

func keyAEAD(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// ParseKeyFile decodes and sanity-checks a key file's bytes.
func ParseKeyFile(data []byte) (*keyFile, error) {
	var kf keyFile
	if err := json.Unmarshal(data, &kf); err != nil {
		return nil, fmt.Errorf("key file: %w", err)
	}
	switch kf.KDF {
	case "none":
	case "argon2id":
		// Bounds keep a hostile key file from demanding hours or gigabytes.
		if kf.Params.Time < 1 || kf.Params.Time > 100 || kf.Params.Memory < 8 || kf.Params.Memory > 4<<20 ||
			kf.Params.Threads < 1 || len(kf.Salt) < 8 || len(kf.Salt) > 64 {
			return nil, fmt.Errorf("key file: argon2id parameters out of range")
		}
	default:
		return nil, fmt.Errorf("key file: unknown KDF %q", kf.KDF)
	}
	return &kf, nil
}

// kek derives the key-encryption key from password (nil for a key file
// without KDF).
func (kf *keyFile) kek(password []byte) []byte {
	if kf.KDF != "argon2id" {
		return nil
	}
	return deriveKey(password, kf.Salt, kf.Params)
}

// open returns the master key using kek, the key derived from the
// password (nil for a key file without KDF), or ErrWrongPassword.
func (kf *keyFile) open(kek []byte) (*masterKey, error) {
	plain := kf.Data
	if kf.KDF == "argon2id" {
		aead, err := keyAEAD(kek)
		if err != nil {
			return nil, err
		}
		if len(kf.Data) < aead.NonceSize()+aead.Overhead() {
			return nil, ErrWrongPassword
		}
		n := aead.NonceSize()
		plain, err = aead.Open(nil, kf.Data[:n], kf.Data[n:], []byte("pgvault key"))
		if err != nil {
			return nil, ErrWrongPassword
		}
	}
	var m masterKey
	if err := json.Unmarshal(plain, &m); err != nil {
		return nil, fmt.Errorf("key file: master key: %w", err)
	}
	if len(m.EncKey) != 32 || len(m.IDKey) != 32 || m.ChunkerPol == 0 ||
		(m.DataPub != nil && len(m.DataPub) != 32) || (m.DataKey != nil && (len(m.DataKey) != 32 || m.DataPub == nil)) {
		return nil, errors.New("key file: master key has the wrong shape")
	}
	return &m, nil
}

// saveKey stores kf under the SHA-256 of its encoding.
func saveKey(ctx context.Context, be backend.Backend, kf *keyFile) (string, error) {
	data, err := json.MarshalIndent(kf, "", "  ")
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(data)
	name := hex.EncodeToString(sum[:])
	if err := be.Save(ctx, backend.Handle{Type: backend.KeyFile, Name: name}, data); err != nil {
		return "", fmt.Errorf("save key: %w", err)
	}
	return name, nil
}

// findKey tries every key file with password. Key files are few (one per
// password), so they are tried one by one; the KDF dominates.
// A cached key-encryption key (kc, for repository repoID) is tried before
// the KDF runs, and a derived one that opened a key file is cached.
// It returns the master key and the name of the key file that opened.
func findKey(ctx context.Context, be backend.Backend, password []byte, encrypted bool, repoID string, kc KeyCache) (*masterKey, string, error) {
	var names []string
	err := be.List(ctx, backend.KeyFile, func(fi backend.FileInfo) error {
		names = append(names, fi.Name)
		return nil
	})
	if err != nil {
		return nil, "", fmt.Errorf("list keys: %w", err)
	}
	if len(names) == 0 {
		return nil, "", fmt.Errorf("%w: no key files", ErrNotRepository)
	}
	if encrypted && len(password) == 0 {
		return nil, "", ErrNoPassword
	}
	var lastErr error = ErrWrongPassword
	for _, name := range names {
		data, err := be.Load(ctx, backend.Handle{Type: backend.KeyFile, Name: name}, 0, 0)
		if err != nil {
			return nil, "", fmt.Errorf("load key %s: %w", name[:8], err)
		}
		kf, err := ParseKeyFile(data)
		if err != nil {
			lastErr = fmt.Errorf("key %s: %w", name[:8], err)
			continue
		}
		if (kf.KDF == "none") == encrypted {
			continue
		}
		if kc != nil && kf.KDF == "argon2id" {
			if kek, ok := kc.Get(repoID, name); ok {
				if m, err := kf.open(kek); err == nil {
					return m, name, nil
				}
			}
		}
		kek := kf.kek(password)
		m, err := kf.open(kek)
		if err == nil {
			if kc != nil && kek != nil {
				kc.Put(repoID, name, kek)
			}
			return m, name, nil
		}
		if !errors.Is(err, ErrWrongPassword) {
			lastErr = fmt.Errorf("key %s: %w", name[:8], err)
		}
	}
	return nil, "", lastErr
}
