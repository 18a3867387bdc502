package repo

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"

	"github.com/pgvault/pgvault/repo/backend"
	"github.com/pgvault/pgvault/repo/pack"
)

func openWith(t *testing.T, be backend.Backend, password string) *Repository {
	t.Helper()
	r, err := Open(ctx, be, []byte(password), Options{PackSize: 256 << 10})
	if err != nil {
		t.Fatalf("open with %q: %v", password, err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// TestWriteOnlyKey: a write-only key stores file data and WAL that only a
// full key reads back, reads metadata, and manages no keys.
func TestWriteOnlyKey(t *testing.T) {
	full, be := newTestRepo(t)
	if _, err := full.AddKey(ctx, []byte("db host"), true); err != nil {
		t.Fatal(err)
	}
	old := randBytes(5, 300<<10)
	oldID, _, err := full.SaveBlob(ctx, pack.DataBlob, old)
	if err != nil {
		t.Fatal(err)
	}
	if err := full.Flush(ctx); err != nil {
		t.Fatal(err)
	}

	wo := openWith(t, be, "db host")
	if !wo.WriteOnly() || full.WriteOnly() {
		t.Fatal("WriteOnly reports the wrong kind")
	}
	data := randBytes(6, 300<<10)
	dataID, _, err := wo.SaveBlob(ctx, pack.DataBlob, data)
	if err != nil {
		t.Fatal(err)
	}
	tree := []byte(`{"nodes":[]}`)
	treeID, _, err := wo.SaveBlob(ctx, pack.MetaBlob, tree)
	if err != nil {
		t.Fatal(err)
	}
	seg := randBytes(7, 1<<20)
	const segName, histName = "000000010000000000000003", "00000002.history"
	history := []byte("1\t0/3000000\tno recovery target specified\n")
	if _, err := wo.SaveWAL(ctx, 1, segName, seg, false); err != nil {
		t.Fatal(err)
	}
	if _, err := wo.SaveWAL(ctx, 2, histName, history, false); err != nil {
		t.Fatal(err)
	}
	// Saving the same segment again compares chunk IDs, not contents.
	if _, err := wo.SaveWAL(ctx, 1, segName, seg, false); err != nil {
		t.Fatalf("a write-only key re-archiving a segment: %v", err)
	}
	partial := randBytes(9, 300<<10)
	const partName = "000000010000000000000004.partial"
	if _, err := wo.SaveWAL(ctx, 1, partName, partial, true); err != nil {
		t.Fatal(err)
	}
	if err := wo.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	// A streamer with a write-only key tells a stored longer partial
	// from its whole chunks' IDs.
	diverged := bytes.Clone(partial[:200<<10])
	diverged[5] ^= 1
	for _, c := range []struct {
		data []byte
		want bool
	}{{partial[:200<<10], true}, {partial[:100<<10], true}, {diverged, false}, {partial, false}} {
		for _, r := range []*Repository{wo, full} {
			if got, err := r.WALExtends(ctx, 1, partName, c.data); err != nil || got != c.want {
				t.Fatalf("WALExtends(%d bytes, write-only %v) = %v, %v; want %v", len(c.data), r.WriteOnly(), got, err, c.want)
			}
		}
	}
	// Nothing the write-only key stores or finds opens with it: old
	// contents, its own, WAL.
	for name, id := range map[string][32]byte{"old data": oldID, "own data": dataID} {
		if _, err := wo.LoadBlob(ctx, id); !errors.Is(err, ErrWriteOnly) {
			t.Fatalf("%s with the write-only key: %v", name, err)
		}
	}
	if _, _, err := wo.LoadWAL(ctx, 1, segName); !errors.Is(err, ErrWriteOnly) {
		t.Fatalf("WAL with the write-only key: %v", err)
	}
	// Metadata and timeline histories it reads.
	if got, err := wo.LoadBlob(ctx, treeID); err != nil || !bytes.Equal(got, tree) {
		t.Fatalf("tree with the write-only key: %v", err)
	}
	if got, _, err := wo.LoadWAL(ctx, 2, histName); err != nil || !bytes.Equal(got, history) {
		t.Fatalf("history with the write-only key: %v", err)
	}
	// The full key reads everything, in a new process as in this one.
	again := openWith(t, be, testPassword)
	for _, c := range []struct {
		id   [32]byte
		want []byte
	}{{oldID, old}, {dataID, data}, {treeID, tree}} {
		if got, err := again.LoadBlob(ctx, c.id); err != nil || !bytes.Equal(got, c.want) {
			t.Fatalf("full key: %v", err)
		}
	}
	if got, _, err := again.LoadWAL(ctx, 1, segName); err != nil || !bytes.Equal(got, seg) {
		t.Fatalf("full key, WAL: %v", err)
	}
	if res, err := again.Check(ctx, CheckOptions{ReadData: true}); err != nil || len(res.Errors) != 0 || res.PacksRead == 0 {
		t.Fatalf("check --read-data with the full key: %v %v", err, res)
	}

	// Key management needs the full key.
	if _, err := wo.AddKey(ctx, []byte("x"), false); !errors.Is(err, ErrWriteOnly) {
		t.Fatalf("write-only AddKey: %v", err)
	}
	keys, err := full.Keys(ctx)
	if err != nil || len(keys) != 2 {
		t.Fatalf("keys: %v %v", keys, err)
	}
	if _, err := wo.RemoveKey(ctx, keys[0].ID); !errors.Is(err, ErrWriteOnly) {
		t.Fatalf("write-only RemoveKey: %v", err)
	}
}

// TestKeyManagement: add, list, remove and passwd, with the refusals that
// keep a repository openable.
func TestKeyManagement(t *testing.T) {
	r, be := newTestRepo(t)
	keys, err := r.Keys(ctx)
	if err != nil || len(keys) != 1 || !keys[0].Current || keys[0].WriteOnly {
		t.Fatalf("keys of a new repository: %+v %v", keys, err)
	}
	first := keys[0].ID
	if _, err := r.RemoveKey(ctx, first[:6]); !errors.Is(err, ErrKeyInUse) {
		t.Fatalf("removing the key in use: %v", err)
	}
	_, err = r.AddKey(ctx, []byte("second"), false)
	if err != nil {
		t.Fatal(err)
	}
	wo, err := r.AddKey(ctx, []byte("host"), true)
	if err != nil || !wo.WriteOnly {
		t.Fatalf("add write-only: %+v %v", wo, err)
	}
	if _, err := r.RemoveKey(ctx, "ffffffff"); !errors.Is(err, ErrKeyNotFound) {
		t.Fatalf("removing an unknown key: %v", err)
	}

	// With the second password: remove the first, then the last full key
	// is refused, the write-only one is not.
	r2 := openWith(t, be, "second")
	if _, err := r2.RemoveKey(ctx, first); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(ctx, be, []byte(testPassword), Options{}); !errors.Is(err, ErrWrongPassword) {
		t.Fatalf("a removed password still opens: %v", err)
	}
	r3 := openWith(t, be, "host")
	info, err := r3.ChangePassword(ctx, []byte("host 2"))
	if err != nil || !info.WriteOnly || !info.Current {
		t.Fatalf("passwd of a write-only key: %+v %v", info, err)
	}
	if _, err := Open(ctx, be, []byte("host"), Options{}); !errors.Is(err, ErrWrongPassword) {
		t.Fatalf("the old password still opens: %v", err)
	}
	if !openWith(t, be, "host 2").WriteOnly() {
		t.Fatal("passwd made a write-only key full")
	}
	keys, _ = r2.Keys(ctx)
	var last string
	for _, k := range keys {
		if !k.WriteOnly {
			last = k.ID
		}
	}
	if _, err := openWith(t, be, "host 2").RemoveKey(ctx, last); !errors.Is(err, ErrWriteOnly) {
		t.Fatalf("write-only removing the last full key: %v", err)
	}
	if _, err := r2.ChangePassword(ctx, []byte("third")); err != nil {
		t.Fatal(err)
	}
	r4 := openWith(t, be, "third")
	keys, _ = r4.Keys(ctx)
	if len(keys) != 2 {
		t.Fatalf("after passwd: %+v", keys)
	}
	other := r4.keyName
	// A full key opened elsewhere cannot remove itself nor the last full.
	if _, err := r4.RemoveKey(ctx, other); !errors.Is(err, ErrKeyInUse) {
		t.Fatalf("removing the key in use: %v", err)
	}
}

// TestFormat1RefusesWriteOnlyKeys: a repository whose contents are sealed
// with the key every password opens cannot have a write-only key, and
// still opens and reads (format 1 is read as before).
func TestFormat1RefusesWriteOnlyKeys(t *testing.T) {
	r, be := newTestRepo(t)
	r.Close()
	cfg := r.Config()
	cfg.Version = oldFormatVersion
	b, _ := json.Marshal(cfg)
	if err := be.Save(ctx, backend.Handle{Type: backend.ConfigFile}, b); err != nil {
		t.Fatal(err)
	}
	v1 := openWith(t, be, testPassword)
	data := randBytes(8, 100<<10)
	id, _, err := v1.SaveBlob(ctx, pack.DataBlob, data)
	if err != nil {
		t.Fatal(err)
	}
	if err := v1.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if got, err := openWith(t, be, testPassword).LoadBlob(ctx, id); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("format 1 read: %v", err)
	}
	if _, err := v1.AddKey(ctx, []byte("host"), true); !errors.Is(err, ErrNoWriteOnlyKeys) {
		t.Fatalf("write-only key on format 1: %v", err)
	}
	if _, err := v1.AddKey(ctx, []byte("another"), false); err != nil {
		t.Fatalf("a second password on format 1: %v", err)
	}
}
