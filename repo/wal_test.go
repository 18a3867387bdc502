package repo

import (
	"bytes"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/pgvault/pgvault/repo/backend"
	"github.com/pgvault/pgvault/repo/backend/mem"
)

func hostname(t *testing.T) string {
	h, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func TestWALRoundTrip(t *testing.T) {
	r, _ := newTestRepo(t)
	seg := randBytes(1, 16<<20)
	const name = "000000010000000000000003"
	if _, err := r.SaveWAL(ctx, 1, name, seg, false); err != nil {
		t.Fatal(err)
	}
	got, wf, err := r.LoadWAL(ctx, 1, name)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, seg) || wf.Size != int64(len(seg)) {
		t.Fatal("WAL segment not byte-exact")
	}
	// The same segment again is fine; a different one is a conflict.
	if _, err := r.SaveWAL(ctx, 1, name, seg, false); err != nil {
		t.Fatalf("saving the same segment twice: %v", err)
	}
	other := bytes.Clone(seg)
	other[100] ^= 1
	if _, err := r.SaveWAL(ctx, 1, name, other, false); !errors.Is(err, ErrWALConflict) {
		t.Fatalf("different segment under the same name: err = %v", err)
	}
	if _, _, err := r.LoadWAL(ctx, 2, name); !errors.Is(err, ErrWALNotFound) {
		t.Fatalf("other timeline: err = %v", err)
	}
	// Chunks are saved in parallel: repeated chunks (a mostly zero
	// segment) are stored once and still read back in order.
	sparse := make([]byte, 16<<20)
	copy(sparse[5<<20:], randBytes(2, 300<<10))
	const sparseName = "000000010000000000000004"
	if _, err := r.SaveWAL(ctx, 1, sparseName, sparse, false); err != nil {
		t.Fatal(err)
	}
	if got, _, err := r.LoadWAL(ctx, 1, sparseName); err != nil || !bytes.Equal(got, sparse) {
		t.Fatalf("sparse segment not byte-exact: %v", err)
	}
}

func TestWALPartialReplaced(t *testing.T) {
	r, _ := newTestRepo(t)
	const name = "000000010000000000000004.partial"
	a := randBytes(2, 3<<20)
	b := append(bytes.Clone(a), randBytes(3, 1<<20)...)
	if _, err := r.SaveWAL(ctx, 1, name, a, true); err != nil {
		t.Fatal(err)
	}
	before := r.StoredBytes()
	if _, err := r.SaveWAL(ctx, 1, name, b, true); err != nil {
		t.Fatal(err)
	}
	// Growing a partial stores only the new chunks.
	if added := r.StoredBytes() - before; added > 2<<20 {
		t.Fatalf("growing a partial by 1 MiB stored %d bytes", added)
	}
	got, wf, err := r.LoadWAL(ctx, 1, name)
	if err != nil || !bytes.Equal(got, b) || !wf.Partial {
		t.Fatalf("partial round trip: %v", err)
	}
	entries, err := r.ListWAL(ctx)
	if err != nil || len(entries) != 1 || entries[0].Name != name || entries[0].Timeline != 1 {
		t.Fatalf("ListWAL = %+v, %v", entries, err)
	}
	if err := r.DeleteWAL(ctx, 1, name); err != nil {
		t.Fatal(err)
	}
	if err := r.DeleteWAL(ctx, 1, name); !errors.Is(err, ErrWALNotFound) {
		t.Fatalf("second delete: %v", err)
	}
}

func TestWALHistoryAndEmptyFiles(t *testing.T) {
	r, _ := newTestRepo(t)
	hist := []byte("1\t0/3000000\tno recovery target specified\n")
	if _, err := r.SaveWAL(ctx, 2, "00000002.history", hist, false); err != nil {
		t.Fatal(err)
	}
	got, _, err := r.LoadWAL(ctx, 2, "00000002.history")
	if err != nil || !bytes.Equal(got, hist) {
		t.Fatalf("history: %q %v", got, err)
	}
	if _, err := r.SaveWAL(ctx, 2, "../escape", hist, false); err == nil {
		t.Fatal("a name with a slash was accepted")
	}
}

// A damaged chunk in a run of chunks read with one request is found: the
// chunks are read one at a time again, and the damaged one is an error
// naming it, never wrong bytes.
func TestLoadWALDamagedChunkInARun(t *testing.T) {
	r, be := newTestRepo(t)
	const name = "000000010000000000000005"
	if _, err := r.SaveWAL(ctx, 1, name, randBytes(5, 4<<20), false); err != nil {
		t.Fatal(err)
	}
	damageBiggestPack(t, be)
	if got, _, err := r.LoadWAL(ctx, 1, name); err == nil {
		t.Fatalf("a damaged chunk read back without an error (%d bytes)", len(got))
	} else if !strings.Contains(err.Error(), name) {
		t.Fatalf("the error does not name the WAL file: %v", err)
	}
}

// damageBiggestPack flips a bit a third of the way into the biggest pack.
func damageBiggestPack(t *testing.T, be *mem.Backend) {
	t.Helper()
	var biggest backend.FileInfo
	be.List(ctx, backend.PackFile, func(fi backend.FileInfo) error {
		if fi.Size > biggest.Size {
			biggest = fi
		}
		return nil
	})
	h := backend.Handle{Type: backend.PackFile, Name: biggest.Name}
	data, err := be.Load(ctx, h, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)/3] ^= 0x40
	be.Put(h.Path(), data)
}
