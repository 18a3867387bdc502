package repo

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/pgvault/pgvault/chunk"
)

// FormatVersion is the repository format this code writes and reads.
const FormatVersion = 1

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

// ParseConfig decodes and validates a config document.
func ParseConfig(data []byte) (Config, error) {
	var c Config
	if err := json.Unmarshal(data, &c); err != nil {
		return c, fmt.Errorf("%w: config is not valid JSON: %v", ErrNotRepository, err)
	}
	if c.Format != "pgvault" {
		return c, fmt.Errorf("%w: config format %q", ErrNotRepository, c.Format)
	}
	if c.Version != FormatVersion {
		return c, fmt.Errorf("repository format version %d is not supported by this pgvault (it reads version %d)", c.Version, FormatVersion)
	}
	if c.Encryption != "aes-256-gcm" && c.Encryption != "none" {
		return c, fmt.Errorf("config: unknown encryption %q", c.Encryption)
	}
	if c.ChunkSize <= 0 || c.ChunkSize%chunk.PageSize != 0 || c.ChunkSize > chunk.MaxChunkSize {
		return c, fmt.Errorf("config: bad chunk size %d", c.ChunkSize)
	}
	if len(c.ID) != 32 {
		return c, fmt.Errorf("config: bad repository id %q", c.ID)
	}
	return c, nil
}
