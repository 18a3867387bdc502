package backendtest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgvault/pgvault/repo/backend"
)

// Option relaxes one check of the suite for a backend that breaks a rule
// on purpose (the fault-injecting wrapper).
type Option func(*config)

type config struct {
	partialWritesVisible bool
}

// PartialWritesVisible is for a backend whose failed Save may leave a
// truncated object visible until the retried Save replaces it (the faulty
// wrapper's partial writes). A reader racing such a Save may then see a
// prefix of a version; the object must still end up whole.
func PartialWritesVisible() Option { return func(c *config) { c.partialWritesVisible = true } }

// Run runs the conformance suite. newBackend must return a fresh, empty
// backend each time it is called; it may be called concurrently, once per
// subtest (subtests run in parallel). Run closes every backend it gets.
func Run(t *testing.T, newBackend func(t *testing.T) backend.Backend, opts ...Option) {
	t.Helper()
	var cfg config
	for _, o := range opts {
		o(&cfg)
	}
	open := func(t *testing.T) backend.Backend {
		t.Helper()
		b := newBackend(t)
		if b == nil {
			t.Fatal("newBackend returned nil")
		}
		t.Cleanup(func() { _ = b.Close() })
		return b
	}
	tests := []struct {
		name string
		fn   func(t *testing.T, open func(*testing.T) backend.Backend)
	}{
		{"ConcurrentOverwriteIsAtomic", func(t *testing.T, open func(*testing.T) backend.Backend) {
			testConcurrentOverwrite(t, open, cfg)
		}},
		{"Location", testLocation},
		{"SaveLoad", testSaveLoad},
		{"LoadRange", testLoadRange},
		{"LoadRangeEmptyObject", testLoadRangeEmpty},
		{"Overwrite", testOverwrite},
		{"Remove", testRemove},
		{"NotFound", testNotFound},
		{"List", testList},
		{"ListEmpty", testListEmpty},
		{"ListStopsOnCallbackError", testListStop},
		{"Concurrent", testConcurrent},
		{"CancelledContext", testCancelled},
		{"InvalidHandles", testInvalidHandles},
		{"ListAll", testListAll},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, open)
		})
	}
}

// ctx bounds every subtest so a wedged backend fails instead of hanging.
func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	t.Cleanup(cancel)
	return c
}

// data returns n deterministic pseudo-random bytes.
func data(seed uint64, n int) []byte {
	r := rand.New(rand.NewChaCha8(seed32(seed)))
	buf := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		binary.LittleEndian.PutUint64(buf[i:], r.Uint64())
	}
	for i := n - n%8; i < n; i++ {
		buf[i] = byte(r.Uint32())
	}
	return buf
}

func seed32(s uint64) (out [32]byte) {
	binary.LittleEndian.PutUint64(out[:], s)
	return out
}

// id returns a 64-hex-digit name like the repository's object IDs.
func id(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

func save(t *testing.T, c context.Context, b backend.Backend, h backend.Handle, buf []byte) {
	t.Helper()
	if err := b.Save(c, h, buf); err != nil {
		t.Fatalf("Save(%v, %d bytes): %v", h, len(buf), err)
	}
}

func checkLoad(t *testing.T, c context.Context, b backend.Backend, h backend.Handle, off, n int64, want []byte) {
	t.Helper()
	got, err := b.Load(c, h, off, n)
	if err != nil {
		t.Fatalf("Load(%v, %d, %d): %v", h, off, n, err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("Load(%v, %d, %d): got %d bytes (sha256 %.12x), want %d bytes (sha256 %.12x)",
			h, off, n, len(got), sha256.Sum256(got), len(want), sha256.Sum256(want))
	}
}

func checkStat(t *testing.T, c context.Context, b backend.Backend, h backend.Handle, size int64) {
	t.Helper()
	fi, err := b.Stat(c, h)
	if err != nil {
		t.Fatalf("Stat(%v): %v", h, err)
	}
	if fi.Size != size || fi.Name != h.Name {
		t.Fatalf("Stat(%v) = {Name %q, Size %d}, want {Name %q, Size %d}", h, fi.Name, fi.Size, h.Name, size)
	}
}

func testLocation(t *testing.T, open func(*testing.T) backend.Backend) {
	b := open(t)
	loc := b.Location()
	if loc == "" {
		t.Fatal("Location() is empty")
	}
	for _, secret := range []string{"secret", "password"} {
		if strings.Contains(strings.ToLower(loc), secret) {
			t.Errorf("Location() = %q mentions %q", loc, secret)
		}
	}
}

func testSaveLoad(t *testing.T, open func(*testing.T) backend.Backend) {
	b := open(t)
	c := ctx(t)
	tests := []struct {
		name string
		h    backend.Handle
		size int
	}{
		{"empty", backend.Handle{Type: backend.KeyFile, Name: "empty"}, 0},
		{"one-byte", backend.Handle{Type: backend.IndexFile, Name: id("one")}, 1},
		{"small", backend.Handle{Type: backend.SnapshotFile, Name: id("small")}, 1000},
		{"config", backend.Handle{Type: backend.ConfigFile}, 317},
		{"lock", backend.Handle{Type: backend.LockFile, Name: id("lock")}, 99},
		{"wal-in-timeline-folder", backend.Handle{Type: backend.WALFile, Name: "00000001/000000010000000000000003"}, 64 << 10},
		{"wal-history", backend.Handle{Type: backend.WALFile, Name: "00000002.history"}, 42},
		{"pack-multi-MiB", backend.Handle{Type: backend.PackFile, Name: id("big")}, 5<<20 + 123},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			buf := data(uint64(i), tc.size)
			save(t, c, b, tc.h, buf)
			checkLoad(t, c, b, tc.h, 0, 0, buf)
			checkStat(t, c, b, tc.h, int64(tc.size))
		})
	}
}

func testLoadRange(t *testing.T, open func(*testing.T) backend.Backend) {
	b := open(t)
	c := ctx(t)
	const size = 1<<20 + 7
	buf := data(7, size)
	h := backend.Handle{Type: backend.PackFile, Name: id("range")}
	save(t, c, b, h, buf)

	ok := []struct{ off, n int64 }{
		{0, 0}, {0, 1}, {0, size}, {1, 0}, {100, 1000}, {300000, 500000},
		{size - 1, 1}, {size - 1, 0}, {size - 4096, 4096},
		{size, 0}, // offset at the end, "to the end": empty
	}
	for _, r := range ok {
		t.Run(fmt.Sprintf("ok-%d+%d", r.off, r.n), func(t *testing.T) {
			end := int64(size)
			if r.n > 0 {
				end = r.off + r.n
			}
			checkLoad(t, c, b, h, r.off, r.n, buf[r.off:end])
		})
	}

	short := []struct{ off, n int64 }{
		{size - 10, 11}, {0, size + 1}, {size, 1}, {size + 1, 0}, {size + 100, 5},
	}
	for _, r := range short {
		t.Run(fmt.Sprintf("short-%d+%d", r.off, r.n), func(t *testing.T) {
			got, err := b.Load(c, h, r.off, r.n)
			if err == nil {
				t.Fatalf("Load(%d, %d) returned %d bytes and no error, want ErrShortRead", r.off, r.n, len(got))
			}
			if !errors.Is(err, backend.ErrShortRead) {
				t.Fatalf("Load(%d, %d): %v, want an error matching ErrShortRead", r.off, r.n, err)
			}
			if got != nil {
				t.Fatalf("Load(%d, %d) returned %d bytes with its error", r.off, r.n, len(got))
			}
		})
	}

	bad := []struct{ off, n int64 }{{-1, 5}, {0, -1}, {-5, 0}}
	for _, r := range bad {
		t.Run(fmt.Sprintf("bad-%d+%d", r.off, r.n), func(t *testing.T) {
			if got, err := b.Load(c, h, r.off, r.n); err == nil {
				t.Fatalf("Load(%d, %d) returned %d bytes and no error", r.off, r.n, len(got))
			}
		})
	}
}

func testLoadRangeEmpty(t *testing.T, open func(*testing.T) backend.Backend) {
	b := open(t)
	c := ctx(t)
	h := backend.Handle{Type: backend.IndexFile, Name: id("empty")}
	save(t, c, b, h, nil)
	checkLoad(t, c, b, h, 0, 0, []byte{})
	checkStat(t, c, b, h, 0)
	if got, err := b.Load(c, h, 0, 1); !errors.Is(err, backend.ErrShortRead) {
		t.Fatalf("Load(0, 1) of an empty object = %d bytes, %v; want ErrShortRead", len(got), err)
	}
}

func testOverwrite(t *testing.T, open func(*testing.T) backend.Backend) {
	b := open(t)
	c := ctx(t)
	for _, h := range []backend.Handle{
		{Type: backend.ConfigFile},
		{Type: backend.LockFile, Name: id("lock")},
		{Type: backend.WALFile, Name: "00000001/000000010000000000000007.partial"},
	} {
		for i, size := range []int{1000, 10, 100 << 10, 0, 33} {
			buf := data(uint64(100+i), size)
			save(t, c, b, h, buf)
			checkLoad(t, c, b, h, 0, 0, buf)
			checkStat(t, c, b, h, int64(size))
		}
	}
}

func testRemove(t *testing.T, open func(*testing.T) backend.Backend) {
	b := open(t)
	c := ctx(t)
	keep := backend.Handle{Type: backend.SnapshotFile, Name: id("keep")}
	save(t, c, b, keep, []byte("keep"))
	for _, h := range []backend.Handle{
		{Type: backend.ConfigFile},
		{Type: backend.PackFile, Name: id("gone")},
		{Type: backend.SnapshotFile, Name: id("gone")},
		{Type: backend.WALFile, Name: "0000000A/0000000A0000000100000002"},
	} {
		save(t, c, b, h, []byte("doomed"))
		if err := b.Remove(c, h); err != nil {
			t.Fatalf("Remove(%v): %v", h, err)
		}
		if _, err := b.Load(c, h, 0, 0); !errors.Is(err, backend.ErrNotFound) {
			t.Errorf("Load(%v) after Remove: %v, want ErrNotFound", h, err)
		}
		if _, err := b.Stat(c, h); !errors.Is(err, backend.ErrNotFound) {
			t.Errorf("Stat(%v) after Remove: %v, want ErrNotFound", h, err)
		}
		if err := b.Remove(c, h); !errors.Is(err, backend.ErrNotFound) {
			t.Errorf("second Remove(%v): %v, want ErrNotFound", h, err)
		}
		names := listNames(t, c, b, h.Type)
		if _, ok := names[h.Name]; ok {
			t.Errorf("List(%v) after Remove still shows %q", h.Type, h.Name)
		}
	}
	checkLoad(t, c, b, keep, 0, 0, []byte("keep"))
}

func testNotFound(t *testing.T, open func(*testing.T) backend.Backend) {
	b := open(t)
	c := ctx(t)
	// Something else exists, so "not found" is not merely "empty repo".
	save(t, c, b, backend.Handle{Type: backend.KeyFile, Name: "present"}, []byte("x"))
	for _, h := range []backend.Handle{
		{Type: backend.ConfigFile},
		{Type: backend.KeyFile, Name: "absent"},
		{Type: backend.PackFile, Name: id("absent")},
		{Type: backend.PackFile, Name: "a"}, // shorter than the 2-digit fan-out
		{Type: backend.IndexFile, Name: id("absent")},
		{Type: backend.SnapshotFile, Name: id("absent")},
		{Type: backend.LockFile, Name: id("absent")},
		{Type: backend.WALFile, Name: "00000001/000000010000000000000001"},
		{Type: backend.WALFile, Name: "00000003.history"},
	} {
		t.Run(strings.ReplaceAll(h.String(), "/", "_"), func(t *testing.T) {
			if got, err := b.Load(c, h, 0, 0); !errors.Is(err, backend.ErrNotFound) {
				t.Errorf("Load: %d bytes, %v; want ErrNotFound", len(got), err)
			}
			if got, err := b.Load(c, h, 10, 20); !errors.Is(err, backend.ErrNotFound) {
				t.Errorf("Load(10, 20): %d bytes, %v; want ErrNotFound", len(got), err)
			}
			if _, err := b.Stat(c, h); !errors.Is(err, backend.ErrNotFound) {
				t.Errorf("Stat: %v; want ErrNotFound", err)
			}
			if err := b.Remove(c, h); !errors.Is(err, backend.ErrNotFound) {
				t.Errorf("Remove: %v; want ErrNotFound", err)
			}
		})
	}
}

// listNames lists t and returns name -> size, failing on duplicates.
func listNames(t *testing.T, c context.Context, b backend.Backend, ft backend.FileType) map[string]int64 {
	t.Helper()
	names := map[string]int64{}
	err := b.List(c, ft, func(fi backend.FileInfo) error {
		if _, dup := names[fi.Name]; dup {
			return fmt.Errorf("%q listed twice", fi.Name)
		}
		names[fi.Name] = fi.Size
		return nil
	})
	if err != nil {
		t.Fatalf("List(%v): %v", ft, err)
	}
	return names
}

func testList(t *testing.T, open func(*testing.T) backend.Backend) {
	b := open(t)
	c := ctx(t)
	want := map[backend.FileType]map[string]int64{}
	add := func(ft backend.FileType, name string, size int) {
		h := backend.Handle{Type: ft, Name: name}
		save(t, c, b, h, data(uint64(len(name)+size), size))
		if want[ft] == nil {
			want[ft] = map[string]int64{}
		}
		want[ft][name] = int64(size)
	}
	add(backend.ConfigFile, "", 55)
	add(backend.KeyFile, id("k1"), 300)
	add(backend.KeyFile, id("k2"), 301)
	for i := range 5 {
		add(backend.PackFile, id(fmt.Sprint("p", i)), 1000+i)
	}
	add(backend.PackFile, "ab", 3) // exactly the fan-out width
	add(backend.IndexFile, id("i1"), 0)
	add(backend.SnapshotFile, id("s1"), 77)
	add(backend.SnapshotFile, id("s2"), 78)
	add(backend.LockFile, id("l1"), 12)
	add(backend.WALFile, "00000001/000000010000000000000003", 160)
	add(backend.WALFile, "00000001/000000010000000000000004.partial", 161)
	add(backend.WALFile, "00000002/000000020000000000000004", 162)
	add(backend.WALFile, "00000002.history", 41)

	for _, ft := range backend.AllTypes {
		t.Run(ft.String(), func(t *testing.T) {
			got := listNames(t, c, b, ft)
			w := want[ft]
			if len(got) != len(w) {
				t.Errorf("List(%v) = %v, want %v", ft, slices.Sorted(maps.Keys(got)), slices.Sorted(maps.Keys(w)))
			}
			for name, size := range w {
				gs, ok := got[name]
				switch {
				case !ok:
					t.Errorf("List(%v) misses %q (got %v)", ft, name, slices.Sorted(maps.Keys(got)))
				case gs != size:
					t.Errorf("List(%v): %q has size %d, want %d", ft, name, gs, size)
				}
			}
		})
	}
}

func testListEmpty(t *testing.T, open func(*testing.T) backend.Backend) {
	b := open(t)
	c := ctx(t)
	for _, ft := range backend.AllTypes {
		err := b.List(c, ft, func(fi backend.FileInfo) error {
			return fmt.Errorf("empty repo listed %q", fi.Name)
		})
		if err != nil {
			t.Errorf("List(%v) of an empty repository: %v", ft, err)
		}
	}
}

func testListStop(t *testing.T, open func(*testing.T) backend.Backend) {
	b := open(t)
	c := ctx(t)
	for i := range 3 {
		save(t, c, b, backend.Handle{Type: backend.IndexFile, Name: id(fmt.Sprint(i))}, []byte("x"))
	}
	stop := errors.New("stop here")
	calls := 0
	err := b.List(c, backend.IndexFile, func(backend.FileInfo) error {
		calls++
		return stop
	})
	if !errors.Is(err, stop) {
		t.Fatalf("List with a failing callback: %v, want the callback's error", err)
	}
	if calls != 1 {
		t.Fatalf("callback called %d times after returning an error, want 1", calls)
	}
}

func testConcurrent(t *testing.T, open func(*testing.T) backend.Backend) {
	b := open(t)
	c := ctx(t)
	const workers, each = 8, 6
	var wg sync.WaitGroup
	errs := make(chan error, workers*each+workers)
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				seed := uint64(w*each + i)
				size := int(seed*7919) % (256 << 10)
				buf := data(seed, size)
				h := backend.Handle{Type: backend.PackFile, Name: id(fmt.Sprint("c", seed))}
				if err := b.Save(c, h, buf); err != nil {
					errs <- fmt.Errorf("Save(%v): %w", h, err)
					continue
				}
				got, err := b.Load(c, h, 0, 0)
				if err != nil || !bytes.Equal(got, buf) {
					errs <- fmt.Errorf("Load(%v): %d bytes (want %d), %v", h, len(got), len(buf), err)
					continue
				}
				if size > 10 {
					got, err := b.Load(c, h, 3, int64(size-10))
					if err != nil || !bytes.Equal(got, buf[3:size-7]) {
						errs <- fmt.Errorf("Load(%v, 3, %d): %d bytes, %v", h, size-10, len(got), err)
						continue
					}
				}
				fi, err := b.Stat(c, h)
				if err != nil || fi.Size != int64(size) {
					errs <- fmt.Errorf("Stat(%v) = %d, %v; want %d", h, fi.Size, err, size)
				}
			}
			// Listing while others write must not fail.
			if err := b.List(c, backend.PackFile, func(backend.FileInfo) error { return nil }); err != nil {
				errs <- fmt.Errorf("List during writes: %w", err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := listNames(t, c, b, backend.PackFile); len(got) != workers*each {
		t.Errorf("List(packs) after concurrent saves: %d objects, want %d", len(got), workers*each)
	}
}

func testConcurrentOverwrite(t *testing.T, open func(*testing.T) backend.Backend, cfg config) {
	b := open(t)
	c := ctx(t)
	h := backend.Handle{Type: backend.LockFile, Name: id("contended")}
	const writers = 8
	versions := make([][]byte, writers)
	for i := range versions {
		versions[i] = data(uint64(1000+i), 64<<10+i*4096)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	for i := range writers {
		wg.Go(func() {
			for range 3 {
				if err := b.Save(c, h, versions[i]); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
					return
				}
				// A concurrent reader sees one whole version, never a mix.
				got, err := b.Load(c, h, 0, 0)
				if err == nil && !slices.ContainsFunc(versions, func(v []byte) bool { return bytes.Equal(got, v) }) &&
					!(cfg.partialWritesVisible && slices.ContainsFunc(versions, func(v []byte) bool { return bytes.HasPrefix(v, got) })) {
					err = fmt.Errorf("read %d bytes matching no saved version", len(got))
				}
				if err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
					return
				}
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		t.Error(err)
	}
	got, err := b.Load(c, h, 0, 0)
	if err != nil {
		t.Fatalf("Load after concurrent overwrites: %v", err)
	}
	if !slices.ContainsFunc(versions, func(v []byte) bool { return bytes.Equal(got, v) }) {
		t.Fatalf("after concurrent overwrites the object (%d bytes) matches no saved version", len(got))
	}
}

func testCancelled(t *testing.T, open func(*testing.T) backend.Backend) {
	b := open(t)
	live := ctx(t)
	h := backend.Handle{Type: backend.SnapshotFile, Name: id("present")}
	save(t, live, b, h, []byte("present"))

	c, cancel := context.WithCancel(live)
	cancel()
	check := func(op string, err error) {
		t.Helper()
		if !errors.Is(err, context.Canceled) {
			t.Errorf("%s with a cancelled context: %v, want an error matching context.Canceled", op, err)
		}
	}
	start := time.Now()
	check("Save", b.Save(c, backend.Handle{Type: backend.SnapshotFile, Name: id("new")}, []byte("x")))
	_, err := b.Load(c, h, 0, 0)
	check("Load", err)
	_, err = b.Stat(c, h)
	check("Stat", err)
	check("Remove", b.Remove(c, h))
	check("List", b.List(c, backend.SnapshotFile, func(backend.FileInfo) error { return nil }))
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("calls with a cancelled context took %v, want prompt returns", d)
	}
}

func testInvalidHandles(t *testing.T, open func(*testing.T) backend.Backend) {
	b := open(t)
	c := ctx(t)
	for _, h := range []backend.Handle{
		{Type: backend.ConfigFile, Name: "x"},
		{Type: backend.KeyFile, Name: ""},
		{Type: backend.KeyFile, Name: "a/b"},
		{Type: backend.PackFile, Name: ".."},
		{Type: backend.PackFile, Name: "../../etc"},
		{Type: backend.IndexFile, Name: "."},
		{Type: backend.SnapshotFile, Name: `a\b`},
		{Type: backend.LockFile, Name: "new\nline"},
		{Type: backend.WALFile, Name: "a/b/c"},
		{Type: backend.WALFile, Name: "../000000010000000000000001"},
		{Type: backend.WALFile, Name: "00000001/"},
		{Type: backend.FileType(0), Name: "x"},
		{Type: backend.FileType(99), Name: "x"},
	} {
		t.Run(fmt.Sprintf("%q", h.String()), func(t *testing.T) {
			check := func(op string, err error) {
				t.Helper()
				if err == nil {
					t.Errorf("%s(%#v) succeeded, want an error", op, h)
				} else if !backend.IsPermanent(err) {
					t.Errorf("%s(%#v): %v is not permanent", op, h, err)
				}
			}
			check("Save", b.Save(c, h, []byte("x")))
			_, err := b.Load(c, h, 0, 0)
			check("Load", err)
			_, err = b.Stat(c, h)
			check("Stat", err)
			check("Remove", b.Remove(c, h))
		})
	}
}

// testListAll: a store that can list everything (backend.Inventory)
// lists an empty location as empty and every saved object by its path.
func testListAll(t *testing.T, open func(*testing.T) backend.Backend) {
	b := open(t)
	inv, ok := backend.InventoryOf(b)
	if !ok {
		t.Skip("this store cannot list everything under its location")
	}
	c := ctx(t)
	all := func() []string {
		var names []string
		if err := inv.ListAll(c, func(n string) error { names = append(names, n); return nil }); err != nil {
			t.Fatal(err)
		}
		slices.Sort(names)
		return names
	}
	if got := all(); len(got) != 0 {
		t.Fatalf("a new location lists %v", got)
	}
	hs := []backend.Handle{{Type: backend.ConfigFile}, {Type: backend.PackFile, Name: id("listall")}, {Type: backend.SnapshotFile, Name: id("snap")}}
	var want []string
	for _, h := range hs {
		save(t, c, b, h, []byte("x"))
		want = append(want, h.Path())
	}
	slices.Sort(want)
	if got := all(); !slices.Equal(got, want) {
		t.Fatalf("ListAll = %v, want %v", got, want)
	}
}
