package repo

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/pgvault/pgvault/chunk"
)

// FormatVersion is the repository format this code writes for encrypted
// repositories: version 2 seals file and WAL contents to the repository's
// public key (chunk.SealData), so that write-only keys can exist.
// Unencrypted repositories are still version 1, and version 1 is read.
const (
	FormatVersion    = 2
	oldFormatVersion = 1
)

// Config is the plaintext document at "config". It holds nothing secret:
// keys and the chunker polynomial live in the wrapped master key.
type Config struct {
	Format     string    `json:"format"` // always "pgvault"
	Version    int       `json:"version"`
	ID         string    `json:"id"`
	Created    time.Time `json:"created"`
	Encryption string    `json:"encryption"` // "aes-256-gcm" or "none"
	ChunkSize  int       `json:"chunk_size"` // fixed chunk size for page files
}

// Encrypted reports whether blobs are sealed with AES-GCM.
func (c Config) Encrypted() bool { return c.Encryption != "none" }

// SealsToPublicKey reports whether data blobs are sealed to the
// repository's public key (format 2), which write-only keys need.
func (c Config) SealsToPublicKey() bool { return c.Version >= FormatVersion }

// ParseConfig decodes and validates a config document.
func ParseConfig(data []byte) (Config, error) {
	var c Config
	if err := json.Unmarshal(data, &c); err != nil {
		return c, fmt.Errorf("%w: config is not valid JSON: %v", ErrNotRepository, err)
	}
	if c.Format != "pgvault" {
		return c, fmt.Errorf("%w: config format %q", ErrNotRepository, c.Format)
	}
	if c.Version != FormatVersion && c.Version != oldFormatVersion {
		return c, fmt.Errorf("repository format version %d is not supported by this pgvault (it reads versions %d and %d)", c.Version, oldFormatVersion, FormatVersion)
	}
	if c.Encryption != "aes-256-gcm" && c.Encryption != "none" {
		return c, fmt.Errorf("config: unknown encryption %q", c.Encryption)
	}
	if c.Version == FormatVersion && !c.Encrypted() {
		return c, errors.New("config: format version 2 needs encryption")
	}
	if c.ChunkSize <= 0 || c.ChunkSize%chunk.PageSize != 0 || c.ChunkSize > chunk.MaxChunkSize {
		return c, fmt.Errorf("config: bad chunk size %d", c.ChunkSize)
	}
	if len(c.ID) != 32 {
		return c, fmt.Errorf("config: bad repository id %q", c.ID)
	}
	return c, nil
}
