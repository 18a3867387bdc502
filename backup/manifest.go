package backup

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash/crc32"
	"regexp"
	"strconv"
)

// PatchManifest updates the entry for path in a PostgreSQL backup_manifest
// to describe content (size and CRC32C), and recomputes the manifest's own
// checksum, so that pg_verifybackup accepts a file pgvault had to change
// on restore (tablespace_map, when tablespaces move).
func PatchManifest(manifest []byte, path string, content []byte) ([]byte, error) {
	entry, err := regexp.Compile(`(?m)^\{ "Path": "` + regexp.QuoteMeta(path) + `", "Size": ([0-9]+),(.*?)"Checksum-Algorithm": "([A-Z0-9]+)", "Checksum": "([0-9a-f]+)" \}`)
	if err != nil { // a path that is not UTF-8 (found by FuzzPatchManifest)
		return nil, fmt.Errorf("backup_manifest: path %q: %w", path, err)
	}
	loc := entry.FindSubmatchIndex(manifest)
	if loc == nil {
		return nil, fmt.Errorf("backup_manifest has no entry for %s", path)
	}
	if algo := string(manifest[loc[6]:loc[7]]); algo != "CRC32C" {
		return nil, fmt.Errorf("backup_manifest entry for %s uses %s checksums; pgvault asks for CRC32C", path, algo)
	}
	var crc [4]byte
	binary.LittleEndian.PutUint32(crc[:], crc32.Checksum(content, crc32.MakeTable(crc32.Castagnoli)))
	var out bytes.Buffer
	out.Write(manifest[:loc[2]])
	out.WriteString(strconv.Itoa(len(content)))
	out.Write(manifest[loc[3]:loc[8]])
	out.WriteString(hex.EncodeToString(crc[:]))
	out.Write(manifest[loc[9]:])
	patched := out.Bytes()

	// The manifest checksum is SHA-256 of everything before its own line.
	const key = `"Manifest-Checksum": "`
	i := bytes.LastIndex(patched, []byte(key))
	if i < 0 || len(patched) < i+len(key)+64 {
		return nil, fmt.Errorf("backup_manifest has no Manifest-Checksum")
	}
	sum := sha256.Sum256(patched[:i])
	copy(patched[i+len(key):], hex.EncodeToString(sum[:]))
	return patched, nil
}
