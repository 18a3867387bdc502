package repo

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/pgvault/pgvault/repo/backend/mem"
)

// countingCache records what findKey asks of a KeyCache.
type countingCache struct {
	DirKeyCache
	gets, hits, puts int
}

func (c *countingCache) Get(repoID, name string) ([]byte, bool) {
	c.gets++
	k, ok := c.DirKeyCache.Get(repoID, name)
	if ok {
		c.hits++
	}
	return k, ok
}

func (c *countingCache) Put(repoID, name string, kek []byte) {
	c.puts++
	c.DirKeyCache.Put(repoID, name, kek)
}

func TestKeyCache(t *testing.T) {
	be := mem.New()
	cfg, err := Init(ctx, be, InitOptions{Password: []byte("pw"), KDF: testKDF()})
	if err != nil {
		t.Fatal(err)
	}
	open := func(pw string, kc KeyCache) error {
		r, err := Open(ctx, be, []byte(pw), Options{KeyCache: kc})
		if err == nil {
			r.Close()
		}
		return err
	}
	dir := t.TempDir()
	entries := func() []string {
		m, _ := filepath.Glob(filepath.Join(dir, cfg.ID, "keys", "*"))
		return m
	}

	c := &countingCache{DirKeyCache: DirKeyCache{Dir: dir, Tag: "file A"}}
	if err := open("wrong", c); !errors.Is(err, ErrWrongPassword) {
		t.Fatalf("wrong password: %v", err)
	}
	if len(entries()) != 0 {
		t.Fatal("a wrong password left a cache entry")
	}
	if err := open("pw", c); err != nil || c.puts != 1 || len(entries()) != 1 {
		t.Fatalf("first open: err %v, %d puts, entries %v", err, c.puts, entries())
	}
	fi, _ := os.Stat(entries()[0])
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("cache entry mode %v, want 0600", fi.Mode().Perm())
	}
	if err := open("pw", c); err != nil || c.hits != 1 || c.puts != 1 {
		t.Fatalf("second open: err %v, %d hits, %d puts: want the cached key used", err, c.hits, c.puts)
	}

	// Another tag (the password file changed): the entry is not trusted,
	// and a wrong password is refused as without a cache.
	other := &countingCache{DirKeyCache: DirKeyCache{Dir: dir, Tag: "file B"}}
	if err := open("wrong", other); !errors.Is(err, ErrWrongPassword) || other.hits != 0 {
		t.Fatalf("other tag, wrong password: %v, %d hits", err, other.hits)
	}

	// A damaged entry falls back to the KDF and is replaced.
	if err := os.WriteFile(entries()[0], []byte(`{"tag":"file A","kek":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}`), 0o600); err != nil {
		t.Fatal(err)
	}
	c2 := &countingCache{DirKeyCache: DirKeyCache{Dir: dir, Tag: "file A"}}
	if err := open("pw", c2); err != nil || c2.hits != 1 || c2.puts != 1 {
		t.Fatalf("damaged entry: err %v, %d hits, %d puts", err, c2.hits, c2.puts)
	}
	// Entries are replaced whole: no temporary file stays beside them.
	if ents, _ := os.ReadDir(filepath.Join(dir, cfg.ID, "keys")); len(ents) != 1 {
		t.Fatalf("keys folder holds %d files, want the one entry", len(ents))
	}

	// A folder others can enter is not used.
	if err := os.Chmod(filepath.Join(dir, cfg.ID, "keys"), 0o755); err != nil {
		t.Fatal(err)
	}
	c3 := &countingCache{DirKeyCache: DirKeyCache{Dir: dir, Tag: "file A"}}
	if err := open("wrong", c3); !errors.Is(err, ErrWrongPassword) {
		t.Fatalf("open through a folder others can read: %v, want the KDF to refuse the wrong password", err)
	}
}

// TestInitSeedsKeyCache: init caches the key it derived, so the first open
// after it uses the cache; an unencrypted repository caches nothing.
func TestInitSeedsKeyCache(t *testing.T) {
	dir := t.TempDir()
	be := mem.New()
	seed := &countingCache{DirKeyCache: DirKeyCache{Dir: dir, Tag: "file A"}}
	if _, err := Init(ctx, be, InitOptions{Password: []byte("pw"), KDF: testKDF(), KeyCache: seed}); err != nil {
		t.Fatal(err)
	}
	if seed.puts != 1 {
		t.Fatalf("init stored %d cache entries, want 1", seed.puts)
	}
	c := &countingCache{DirKeyCache: DirKeyCache{Dir: dir, Tag: "file A"}}
	r, err := Open(ctx, be, []byte("pw"), Options{KeyCache: c})
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	if c.hits != 1 || c.puts != 0 {
		t.Fatalf("first open after init: %d hits, %d puts: want the key init cached", c.hits, c.puts)
	}

	plain := &countingCache{DirKeyCache: DirKeyCache{Dir: t.TempDir(), Tag: "file A"}}
	if _, err := Init(ctx, mem.New(), InitOptions{NoEncryption: true, KeyCache: plain}); err != nil {
		t.Fatal(err)
	}
	if plain.puts != 0 {
		t.Fatalf("an unencrypted init stored %d cache entries", plain.puts)
	}
}
