package repo

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pgvault/pgvault/repo/backend"
	"github.com/pgvault/pgvault/repo/backend/mem"
)

// later makes every pack look older than any grace period.
func later(r *Repository) { r.opts.Now = func() time.Time { return time.Now().Add(48 * time.Hour) } }

func storedBytes(t *testing.T, be backend.Backend) int64 {
	var n int64
	be.List(ctx, backend.PackFile, func(fi backend.FileInfo) error { n += fi.Size; return nil })
	return n
}

func TestPruneRemovesWhatNothingReferences(t *testing.T) {
	r, be := newTestRepo(t)
	keep := map[string][]byte{"base/1/1": randBytes(1, 40*128<<10), "PG_VERSION": []byte("15\n")}
	drop := map[string][]byte{"base/1/2": randBytes(2, 40*128<<10)}
	s1 := writeSnapshot(t, r, keep)
	s2 := writeSnapshot(t, r, drop)
	r.SaveWAL(ctx, 1, "000000010000000000000001", randBytes(3, 1<<20), false)
	before := storedBytes(t, be)
	if err := r.DeleteSnapshot(ctx, s2.ID); err != nil {
		t.Fatal(err)
	}

	// Young packs are never touched.
	res, err := r.Prune(ctx, PruneOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res.PacksDeleted+res.PacksRepacked != 0 || storedBytes(t, be) < before {
		t.Fatalf("prune touched young packs: %+v", res)
	}

	// A dry run changes nothing, but says what would go.
	later(r)
	dry, err := r.Prune(ctx, PruneOptions{DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if dry.BytesFreed < 4<<20 || storedBytes(t, be) < before {
		t.Fatalf("dry run: %+v", dry)
	}

	res, err = r.Prune(ctx, PruneOptions{})
	if err != nil {
		t.Fatal(err)
	}
	after := storedBytes(t, be)
	t.Logf("prune: %+v; %d -> %d bytes", res, before, after)
	if after > before-4<<20 {
		t.Fatalf("prune freed only %d bytes", before-after)
	}
	if got := readAll(t, r, s1, "base/1/1"); !bytes.Equal(got, keep["base/1/1"]) {
		t.Fatal("the kept snapshot changed")
	}
	if _, _, err := r.LoadWAL(ctx, 1, "000000010000000000000001"); err != nil {
		t.Fatalf("WAL lost: %v", err)
	}
	chk := mustCheck(t, r, true)
	if len(chk.Errors)+len(chk.Warnings) != 0 {
		t.Fatalf("check after prune: %v %v", chk.Errors, chk.Warnings)
	}
	// A fresh process sees the same.
	r2, err := Open(ctx, be, []byte(testPassword), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	if got := readAll(t, r2, s1, "base/1/1"); !bytes.Equal(got, keep["base/1/1"]) {
		t.Fatal("the kept snapshot changed (fresh open)")
	}
}

func TestPruneRepacksPartlyUsedAndSmallPacks(t *testing.T) {
	be := mem.New()
	r := newTestRepoOn(t, be, Options{PackSize: 8 << 20})
	// One pack holds both files; dropping one leaves it half garbage.
	s1 := writeSnapshot(t, r, map[string][]byte{"base/a": randBytes(5, 20*128<<10), "base/b": randBytes(6, 20*128<<10)})
	s2 := writeSnapshot(t, r, map[string][]byte{"base/a": randBytes(5, 20*128<<10)})
	r.DeleteSnapshot(ctx, s1.ID)
	later(r)
	res, err := r.Prune(ctx, PruneOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res.PacksRepacked == 0 || res.NewPacks == 0 {
		t.Fatalf("nothing repacked: %+v", res)
	}
	if got := readAll(t, r, s2, "base/a"); !bytes.Equal(got, randBytes(5, 20*128<<10)) {
		t.Fatal("content changed by repacking")
	}
	chk := mustCheck(t, r, true)
	if len(chk.Errors)+len(chk.Warnings) != 0 {
		t.Fatalf("check after repack: %v %v", chk.Errors, chk.Warnings)
	}
}

// TestPruneWithConcurrentWriter runs prune while a streamer-like writer
// (ConcurrentWriter, its own process view) keeps storing WAL, with
// garbage in old packs: everything the writer stored stays readable.
func TestPruneWithConcurrentWriter(t *testing.T) {
	be := mem.New()
	r := newTestRepoOn(t, be, Options{PackSize: 1 << 20})
	// The garbage is two hours old; everything written from here on is new.
	be.SetClock(func() time.Time { return time.Now().Add(-2 * time.Hour) })
	old := writeSnapshot(t, r, map[string][]byte{"base/x": append(randBytes(7, 30*128<<10), make([]byte, 256<<10)...)})
	r.SaveWAL(ctx, 1, "0000000100000000000000FF", make([]byte, 512<<10), false)
	r.DeleteWAL(ctx, 1, "0000000100000000000000FF")
	r.DeleteSnapshot(ctx, old.ID)
	be.SetClock(nil)

	w, err := Open(ctx, be, []byte(testPassword), Options{ConcurrentWriter: true, PackSize: 256 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	const files = 40
	done := make(chan []string, 1)
	go func() {
		var names []string
		for i := range files {
			name := fmt.Sprintf("%024X", i+1)
			// Reuses the same zero chunk again and again, as switched
			// segments do: only its own copies, never prune's garbage.
			data := append(randBytes(uint64(100+i), 200<<10), make([]byte, 256<<10)...)
			if _, err := w.SaveWAL(ctx, 1, name, data, false); err != nil {
				t.Error(err)
			}
			names = append(names, name)
		}
		done <- names
	}()
	var freed int64
	var names []string
	prunes := 0
	for names == nil || prunes < 3 {
		res, err := r.Prune(ctx, PruneOptions{Grace: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		freed += res.BytesFreed
		prunes++
		select {
		case names = <-done:
		default:
		}
	}
	if freed == 0 {
		t.Fatal("prune freed nothing: the test does not exercise deletion")
	}
	r2, err := Open(ctx, be, []byte(testPassword), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	for i, name := range names {
		want := append(randBytes(uint64(100+i), 200<<10), make([]byte, 256<<10)...)
		got, _, err := r2.LoadWAL(ctx, 1, name)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("WAL %s written during prune: %v", name, err)
		}
	}
	chk := mustCheck(t, r2, true)
	for _, p := range chk.Errors {
		t.Errorf("check: %s", p)
	}
	t.Logf("%d WAL files written during %d prunes", len(names), prunes)
}

func TestPruneRefusesMissingPacks(t *testing.T) {
	r, be := newTestRepo(t)
	writeSnapshot(t, r, map[string][]byte{"base/a": randBytes(8, 10*128<<10)})
	packID, _ := dataPack(t, r) // a data pack: a missing tree fails earlier, differently
	be.Remove(ctx, backend.Handle{Type: backend.PackFile, Name: packID.String()})
	later(r)
	_, err := r.Prune(ctx, PruneOptions{})
	if err == nil || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("prune with a missing pack: %v", err)
	}
}

func TestIDSet(t *testing.T) {
	s := newIDSet(1000)
	for i := range 1000 {
		s.add(BlobIDFor(i))
	}
	for i := range 1000 {
		if !s.has(BlobIDFor(i)) {
			t.Fatal("false negative")
		}
	}
	fp := 0
	for i := 1000; i < 101000; i++ {
		if s.has(BlobIDFor(i)) {
			fp++
		}
	}
	if fp > 200 { // 0.2% of 100,000; expected about 0.05%
		t.Fatalf("%d false positives in 100000", fp)
	}
}

// BlobIDFor is a deterministic pseudo-random ID for tests.
func BlobIDFor(i int) (id [32]byte) {
	b := randBytes(uint64(i)+1, 32)
	copy(id[:], b)
	return id
}

// A snapshot's attachments survive prune (which removes an attachment of
// a deleted snapshot), read back after a fresh open, and check reads them.
func TestSnapshotAttachments(t *testing.T) {
	r, be := newTestRepo(t)
	catalog := randBytes(7, 300<<10)
	w := r.NewSnapshotWriter(ctx)
	if _, err := w.AddFile("PG_VERSION", NodeMeta{Mode: 0o600}, bytes.NewReader([]byte("15\n")), SplitCDC); err != nil {
		t.Fatal(err)
	}
	s, err := w.Commit(ctx, SnapshotInfo{Kind: "test", Attachments: map[string][]byte{"catalog": catalog}})
	if err != nil {
		t.Fatal(err)
	}
	gone := writeSnapshot(t, r, map[string][]byte{"PG_VERSION": []byte("16\n")})
	w = r.NewSnapshotWriter(ctx)
	w.AddFile("PG_VERSION", NodeMeta{Mode: 0o600}, bytes.NewReader([]byte("17\n")), SplitCDC)
	dropped, err := w.Commit(ctx, SnapshotInfo{Kind: "test", Attachments: map[string][]byte{"catalog": randBytes(8, 300<<10)}})
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{gone.ID, dropped.ID} {
		if err := r.DeleteSnapshot(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	before := storedBytes(t, be)
	later(r)
	if _, err := r.Prune(ctx, PruneOptions{}); err != nil {
		t.Fatal(err)
	}
	if freed := before - storedBytes(t, be); freed < 300<<10 {
		t.Fatalf("prune freed %d bytes: the deleted snapshot's attachment is still stored", freed)
	}
	r2, err := Open(ctx, be, []byte(testPassword), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	s2, err := r2.LoadSnapshot(ctx, s.ID)
	if err != nil {
		t.Fatal(err)
	}
	got, ok, err := r2.LoadAttachment(ctx, s2, "catalog")
	if err != nil || !ok || !bytes.Equal(got, catalog) {
		t.Fatalf("attachment after prune and a fresh open: ok %v, %v, %d bytes", ok, err, len(got))
	}
	if _, ok, err := r2.LoadAttachment(ctx, s2, "other"); ok || err != nil {
		t.Fatalf("an attachment the snapshot lacks: ok %v, %v", ok, err)
	}
	if chk := mustCheck(t, r2, true); len(chk.Errors) != 0 {
		t.Fatalf("check: %v", chk.Errors)
	}
}
