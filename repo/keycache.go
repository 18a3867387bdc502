package repo

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"syscall"

	"github.com/pgvault/pgvault/internal/atomicfile"
)

// KeyCache keeps the key-encryption key that the KDF derives from a
// password for one key file, so that a command started again and again
// (archive_command, restore_command) does not pay the KDF every time:
// argon2id is most of a `wal push` of a 16 MiB segment.
//
// An entry is as sensitive as the password: whoever reads it can open the
// repository. Implementations keep entries where only the password's owner
// can read them and drop them when the password may have changed.
type KeyCache interface {
	Get(repoID, keyName string) (kek []byte, ok bool)
	Put(repoID, keyName string, kek []byte)
}

// DirKeyCache is a KeyCache in Dir/<repository id>/keys/, a folder only
// the current user can enter. Tag names the password source (e.g. the
// password file's path, inode, size and modification time); an entry made
// under another tag is ignored, so a changed password is never trusted
// from the cache. Failures to read or write it are ignored: the KDF then
// runs as without a cache.
type DirKeyCache struct {
	Dir string
	Tag string
}

type keyCacheEntry struct {
	Tag string `json:"tag"`
	KEK []byte `json:"kek"`
}

var safeName = regexp.MustCompile(`^[0-9a-f]{16,128}$`)

// folder returns the private folder for repoID, creating it; ok false if
// it is not private (another owner, or group or other access).
func (c DirKeyCache) folder(repoID string, create bool) (string, bool) {
	if c.Dir == "" || !safeName.MatchString(repoID) {
		return "", false
	}
	dir := filepath.Join(c.Dir, repoID, "keys")
	if create {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return "", false
		}
	}
	// The repository's folder must be ours and closed to others' writes
	// too, or someone could swap the keys folder between check and use.
	if fi, err := os.Lstat(filepath.Dir(dir)); err != nil || !fi.IsDir() || fi.Mode().Perm()&0o022 != 0 || !ownedByMe(fi) {
		return "", false
	}
	fi, err := os.Lstat(dir)
	if err != nil || !fi.IsDir() || fi.Mode().Perm()&0o077 != 0 || !ownedByMe(fi) {
		return "", false
	}
	return dir, true
}

func ownedByMe(fi os.FileInfo) bool {
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && st.Uid == uint32(os.Geteuid())
}

func (c DirKeyCache) Get(repoID, keyName string) ([]byte, bool) {
	dir, ok := c.folder(repoID, false)
	if !ok || !safeName.MatchString(keyName) {
		return nil, false
	}
	p := filepath.Join(dir, keyName)
	fi, err := os.Lstat(p)
	if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm()&0o077 != 0 || !ownedByMe(fi) {
		return nil, false
	}
	data, err := os.ReadFile(p)
	if err != nil {
		return nil, false
	}
	var e keyCacheEntry
	if json.Unmarshal(data, &e) != nil || e.Tag != c.Tag || len(e.KEK) != 32 {
		return nil, false
	}
	return e.KEK, true
}

func (c DirKeyCache) Put(repoID, keyName string, kek []byte) {
	dir, ok := c.folder(repoID, true)
	if !ok || !safeName.MatchString(keyName) {
		return
	}
	data, _ := json.Marshal(keyCacheEntry{Tag: c.Tag, KEK: kek})
	// Not synced: an entry lost in a crash costs one run of the KDF. The
	// file is private (0600) from its creation on.
	_ = atomicfile.WriteFile(filepath.Join(dir, keyName), data, atomicfile.Options{Perm: 0o600, NoSync: true})
}
