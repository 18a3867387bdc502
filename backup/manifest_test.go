package backup

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"testing"
)

func sampleManifest() []byte {
	body := `{ "PostgreSQL-Backup-Manifest-Version": 1,
"Files": [
{ "Path": "PG_VERSION", "Size": 3, "Last-Modified": "2026-11-21 11:15:32 GMT", "Checksum-Algorithm": "CRC32C", "Checksum": "8a744722" },
{ "Path": "tablespace_map", "Size": 18, "Last-Modified": "2026-11-21 11:15:38 GMT", "Checksum-Algorithm": "CRC32C", "Checksum": "fd984c69" }
],
"WAL-Ranges": [
{ "Timeline": 1, "Start-LSN": "0/7000028", "End-LSN": "0/7000100" }
],
`
	sum := sha256.Sum256([]byte(body))
	return []byte(body + `"Manifest-Checksum": "` + hex.EncodeToString(sum[:]) + `"}` + "\n")
}

func TestPatchManifest(t *testing.T) {
	m := sampleManifest()
	// "15\n" has CRC32C 8a744722 in PostgreSQL's byte order (from a real manifest).
	got, err := PatchManifest(m, "tablespace_map", []byte("15\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := `{ "Path": "tablespace_map", "Size": 3, "Last-Modified": "2026-11-21 11:15:38 GMT", "Checksum-Algorithm": "CRC32C", "Checksum": "8a744722" }`
	if !strings.Contains(string(got), want) {
		t.Fatalf("entry not patched:\n%s", got)
	}
	i := strings.LastIndex(string(got), `"Manifest-Checksum"`)
	sum := sha256.Sum256(got[:i])
	if !strings.Contains(string(got[i:]), hex.EncodeToString(sum[:])) {
		t.Fatal("manifest checksum not recomputed")
	}
	if _, err := PatchManifest(m, "nope", nil); err == nil {
		t.Fatal("patched a missing entry")
	}
}
