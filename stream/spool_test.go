package stream_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pgvault/pgvault/internal/atomicfile"
	"github.com/pgvault/pgvault/internal/pg/wal"
	"github.com/pgvault/pgvault/repo"
	"github.com/pgvault/pgvault/repo/backend"
	"github.com/pgvault/pgvault/repo/backend/mem"
	"github.com/pgvault/pgvault/repo/repotest"
	"github.com/pgvault/pgvault/stream"
)

const testRepoID = "0123456789abcdef0123456789abcdef"

func newSpool(t *testing.T) *stream.Spool {
	t.Helper()
	s, err := stream.OpenSpool(t.TempDir(), testRepoID)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func spoolNames(t *testing.T, s *stream.Spool) []string {
	t.Helper()
	ents, err := os.ReadDir(s.Dir())
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if wal.Classify(e.Name()) == wal.KindSegment {
			out = append(out, e.Name())
		}
	}
	slices.Sort(out)
	return out
}

func TestSpoolPutTake(t *testing.T) {
	s := newSpool(t)
	if filepath.Base(s.Dir()) != "spool" || filepath.Base(filepath.Dir(s.Dir())) != testRepoID {
		t.Fatalf("spool at %s", s.Dir())
	}
	name, data := seg(1, 7, mib)
	if err := s.Put(name, data); err != nil {
		t.Fatal(err)
	}
	if err := s.Want(name, mib); err != nil {
		t.Fatal(err)
	}
	// Entries are private and appear whole: no temporary file stays.
	ents, _ := os.ReadDir(s.Dir())
	for _, e := range ents {
		fi, err := e.Info()
		if atomicfile.IsTemp(e.Name()) || err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("spool holds %s (mode %v, %v)", e.Name(), fi.Mode(), err)
		}
	}
	if err := s.Put(name+".partial", data); !errors.Is(err, wal.ErrInvalidName) {
		t.Fatalf("a partial was spooled: %v", err)
	}
	if !s.Has(name) || s.Has(segName(1, 8)) {
		t.Fatal("Has is wrong")
	}
	dest := filepath.Join(t.TempDir(), "RECOVERYXLOG")
	res, ok, err := s.Take(name, dest)
	if err != nil || !ok {
		t.Fatalf("take: %v %v", ok, err)
	}
	got, _ := os.ReadFile(dest)
	fi, _ := os.Stat(dest)
	if !bytes.Equal(got, data) || fi.Mode().Perm() != 0o600 || res.Source != stream.SourceSpool || res.SegmentSize != mib {
		t.Fatalf("taken: %d bytes, mode %v, %+v", len(got), fi.Mode(), res)
	}
	if s.Has(name) {
		t.Fatal("a taken segment is still spooled")
	}
	if _, ok, err := s.Take(name, dest); ok || err != nil {
		t.Fatalf("second take: %v %v", ok, err)
	}
	// A damaged entry is a miss, and is removed.
	bad := bytes.Clone(data)
	bad[wal.PageSize*3+9] ^= 0xFF // a page address
	os.WriteFile(filepath.Join(s.Dir(), name), bad, 0o600)
	if _, ok, err := s.Take(name, dest); ok || err != nil || s.Has(name) {
		t.Fatalf("damaged entry: ok %v err %v still there %v", ok, err, s.Has(name))
	}
	if _, ok, _ := s.Take("00000002.history", dest); ok {
		t.Fatal("history files are not spooled")
	}
	// An empty entry (a full disk when it was written) is a miss too.
	os.WriteFile(filepath.Join(s.Dir(), name), nil, 0o600)
	if _, ok, err := s.Take(name, dest); ok || err != nil || s.Has(name) {
		t.Fatalf("empty entry: ok %v err %v still there %v", ok, err, s.Has(name))
	}
}

// A restore whose pg_wal is on another file system than the cache gets a
// copy, not a rename.
func TestSpoolTakeAcrossFileSystems(t *testing.T) {
	s := newSpool(t)
	// /dev/shm is a tmpfs on every Linux this runs on; the temporary
	// folder is not.
	other, err := os.MkdirTemp("/dev/shm", "spooltest")
	if err != nil {
		t.Fatalf("a folder on another file system: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(other) })
	var a, b unix.Stat_t
	if err := errors.Join(unix.Stat(s.Dir(), &a), unix.Stat(other, &b)); err != nil || a.Dev == b.Dev {
		t.Fatalf("/dev/shm must be another file system than %s (%v): the test needs a rename to fail with EXDEV", s.Dir(), err)
	}
	name, data := seg(1, 9, mib)
	if err := s.Put(name, data); err != nil {
		t.Fatal(err)
	}
	dest := filepath.Join(other, "RECOVERYXLOG")
	if _, ok, err := s.Take(name, dest); err != nil || !ok {
		t.Fatalf("take: %v %v", ok, err)
	}
	got, _ := os.ReadFile(dest)
	if !bytes.Equal(got, data) || s.Has(name) {
		t.Fatalf("copied %d bytes, still spooled %v", len(got), s.Has(name))
	}
	ents, _ := os.ReadDir(other)
	if len(ents) != 1 {
		t.Fatalf("dest folder holds %d files", len(ents))
	}
}

func TestOpenSpoolRefusesUnsafeFolders(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, cache string)
		ok    bool
	}{
		{"fresh", func(*testing.T, string) {}, true},
		{"sticky world-writable cache like /tmp", func(t *testing.T, cache string) { os.Chmod(cache, os.ModeSticky|0o777) }, true},
		{"world-writable cache", func(t *testing.T, cache string) { os.Chmod(cache, 0o777) }, false},
		{"group-writable repository folder", func(t *testing.T, cache string) {
			os.MkdirAll(filepath.Join(cache, testRepoID), 0o700)
			os.Chmod(filepath.Join(cache, testRepoID), 0o770)
		}, false},
		{"spool is a symbolic link", func(t *testing.T, cache string) {
			os.MkdirAll(filepath.Join(cache, testRepoID), 0o700)
			os.Symlink(t.TempDir(), filepath.Join(cache, testRepoID, "spool"))
		}, false},
		{"spool is a file", func(t *testing.T, cache string) {
			os.MkdirAll(filepath.Join(cache, testRepoID), 0o700)
			os.WriteFile(filepath.Join(cache, testRepoID, "spool"), nil, 0o600)
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cache := t.TempDir()
			tt.setup(t, cache)
			_, err := stream.OpenSpool(cache, testRepoID)
			if (err == nil) != tt.ok {
				t.Fatalf("err = %v, want ok %v", err, tt.ok)
			}
		})
	}
	if _, err := stream.OpenSpool(t.TempDir(), "../x"); err == nil {
		t.Fatal("a repository id with a slash was accepted")
	}
	if os.Geteuid() == 0 {
		// Owned by another user: only root can set that up.
		cache := t.TempDir()
		os.MkdirAll(filepath.Join(cache, testRepoID, "spool"), 0o700)
		os.Chown(filepath.Join(cache, testRepoID, "spool"), 12345, 12345)
		if _, err := stream.OpenSpool(cache, testRepoID); !errors.Is(err, stream.ErrUnsafeSpool) {
			t.Fatalf("foreign spool: %v", err)
		}
	}
}

func TestSpoolClean(t *testing.T) {
	s := newSpool(t)
	for no := uint64(3); no <= 9; no++ {
		name, data := seg(1, no, mib)
		s.Put(name, data)
	}
	name, data := seg(2, 4, mib) // another timeline, already passed
	s.Put(name, data)
	tmp := filepath.Join(s.Dir(), "."+segName(1, 12)+".tmp-123")
	os.WriteFile(tmp, []byte("half"), 0o600)
	old := time.Now().Add(-2 * time.Hour)
	os.Chtimes(filepath.Join(s.Dir(), segName(1, 9)), old, old)
	os.Chtimes(tmp, old, old)

	if n := s.Clean(segName(2, 6), time.Hour, time.Now()); n != 6 {
		t.Fatalf("removed %d, want 6", n)
	}
	want := []string{segName(1, 6), segName(1, 7), segName(1, 8)}
	if got := spoolNames(t, s); !slices.Equal(got, want) {
		t.Fatalf("left %v, want %v", got, want)
	}
	if _, err := os.Stat(tmp); err == nil {
		t.Fatal("old temporary file left")
	}
	if n := s.Ahead(segName(1, 6)); n != 2 {
		t.Fatalf("ahead of 6: %d", n)
	}
	if n := s.Ahead(segName(2, 6)); n != 0 {
		t.Fatalf("ahead on timeline 2: %d", n)
	}
	if n := s.Clean("", time.Hour, time.Now()); n != 0 {
		t.Fatalf("clean by age removed %d", n)
	}
}

func TestSpoolWant(t *testing.T) {
	s := newSpool(t)
	if _, _, ok := s.Wanted(); ok {
		t.Fatal("want file in a new spool")
	}
	if err := s.Want(segName(1, 0x1FF), mib); err != nil {
		t.Fatal(err)
	}
	if n, sz, ok := s.Wanted(); !ok || n != segName(1, 0x1FF) || sz != mib {
		t.Fatalf("wanted %s %d %v", n, sz, ok)
	}
	if err := s.Want(segName(1, 0x1FF), 16*mib); err == nil {
		t.Fatal("a name out of range for 16 MiB segments was accepted")
	}
	// What recovery has passed, the prefetcher need not download.
	for _, c := range []struct {
		name   string
		passed bool
	}{
		{segName(1, 0x1FE), true},
		{segName(1, 0x1FF), true},
		{segName(1, 0x200), false},
		{segName(2, 0x100), false}, // a later timeline is not passed
		{"00000001.history", false},
	} {
		if got := s.Passed(c.name); got != c.passed {
			t.Errorf("Passed(%s) = %v after want %s", c.name, got, segName(1, 0x1FF))
		}
	}
}

func TestParseWant(t *testing.T) {
	tests := []struct {
		in   string
		name string
		size uint64
		ok   bool
	}{
		{"000000010000000000000005 16777216\n", "000000010000000000000005", 16 << 20, true},
		{"0000000100000000000003FF 1048576\n", "0000000100000000000003FF", 1 << 20, true},
		{"000000010000000000000005 16777216", "", 0, false},
		{"000000010000000000000005\n", "", 0, false},
		{"000000010000000000000005 1000\n", "", 0, false},
		{"0000000100000000000003FF 16777216\n", "", 0, false},
		{"RECOVERYXLOG 16777216\n", "", 0, false},
		{"000000010000000000000005  16777216\n", "", 0, false},
		{"", "", 0, false},
	}
	for _, tt := range tests {
		name, size, err := stream.ParseWant([]byte(tt.in))
		if (err == nil) != tt.ok || name != tt.name || size != tt.size {
			t.Errorf("ParseWant(%q) = %q, %d, %v", tt.in, name, size, err)
		}
	}
}

func FuzzParseWant(f *testing.F) {
	f.Add([]byte("000000010000000000000005 16777216\n"))
	f.Add([]byte("0000000100000000000003FF 1048576\n"))
	f.Add([]byte(" \n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		name, size, err := stream.ParseWant(data)
		if err != nil {
			return
		}
		if _, perr := wal.ParseSegment(name, size); perr != nil {
			t.Fatalf("accepted %q: %v", data, perr)
		}
		if got, gs, err := stream.ParseWant([]byte(name + " " + itoa64(size) + "\n")); err != nil || got != name || gs != size {
			t.Fatalf("round trip of %q failed", data)
		}
	})
}

func itoa64(n uint64) string {
	var b []byte
	for {
		b = append([]byte{byte('0' + n%10)}, b...)
		n /= 10
		if n == 0 {
			return string(b)
		}
	}
}

func TestPrefetchLock(t *testing.T) {
	s := newSpool(t)
	if s.PrefetchRunning() {
		t.Fatal("running before anyone locked")
	}
	release, err := s.LockPrefetch()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.LockPrefetch(); !errors.Is(err, stream.ErrPrefetchRunning) {
		t.Fatalf("second lock: %v", err)
	}
	if !s.PrefetchRunning() {
		t.Fatal("not running while locked")
	}
	release()
	if s.PrefetchRunning() {
		t.Fatal("running after release")
	}
}

// prefetchRepo holds complete segments 1..last of timeline 1 (1 MiB) and
// a partial of last+1.
func prefetchRepo(t *testing.T, last uint64) *repo.Repository {
	t.Helper()
	r, _ := repotest.New(t)
	for no := uint64(1); no <= last; no++ {
		name, data := seg(1, no, mib)
		mustSave(t, r, name, data)
	}
	name, data := seg(1, last+1, mib)
	mustSave(t, r, name+".partial", data[:64*1024])
	return r
}

func TestPrefetch(t *testing.T) {
	ctx := context.Background()
	r := prefetchRepo(t, 12)
	s := newSpool(t)
	fast := stream.PrefetchOptions{SegmentSize: mib, Count: 4, Idle: 50 * time.Millisecond, Poll: 5 * time.Millisecond}

	// From segment 2: 3..6.
	o := fast
	o.After = segName(1, 2)
	res, err := stream.Prefetch(ctx, r, s, o)
	if err != nil || res.Fetched != 4 || res.Missing != 0 {
		t.Fatalf("prefetch: %+v, %v", res, err)
	}
	if got, want := spoolNames(t, s), []string{segName(1, 3), segName(1, 4), segName(1, 5), segName(1, 6)}; !slices.Equal(got, want) {
		t.Fatalf("spooled %v, want %v", got, want)
	}

	// Recovery moves on while the prefetcher runs: it follows the want
	// file, and stops at the end of the archive (13 is only a partial).
	// Recovery asks for each segment once the prefetcher has spooled it,
	// so that every one is served from the spool.
	o.Idle = 300 * time.Millisecond
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for no := uint64(3); no <= 10; no++ {
			deadline := time.After(5 * time.Second)
			for !s.Has(segName(1, no)) {
				select {
				case <-tick.C:
				case <-deadline:
					t.Errorf("the prefetcher did not spool %s within 5 s", segName(1, no))
					return
				}
			}
			s.Want(segName(1, no), mib)
			s.Take(segName(1, no), filepath.Join(t.TempDir(), "x"))
			s.Clean(segName(1, no), time.Hour, time.Now())
		}
	}()
	res, err = stream.Prefetch(ctx, r, s, o)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := spoolNames(t, s), []string{segName(1, 11), segName(1, 12)}; !slices.Equal(got, want) {
		t.Fatalf("spooled %v, want %v (result %+v)", got, want, res)
	}
	if res.Missing == 0 {
		t.Fatalf("the end of the archive was not noticed: %+v", res)
	}

	// A cancelled context ends it.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	o.After = segName(1, 20)
	os.Remove(filepath.Join(s.Dir(), "want"))
	if _, err := stream.Prefetch(cctx, r, s, o); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: %v", err)
	}
	// A spool that disappears ends it with an error.
	os.RemoveAll(s.Dir())
	o.After = segName(1, 1)
	if _, err := stream.Prefetch(ctx, r, s, o); err == nil {
		t.Fatal("prefetch into a removed spool succeeded")
	}
}

// gatedBackend holds every load of one object until its gate is closed.
type gatedBackend struct {
	backend.Backend
	name  string
	gate  chan struct{}
	armed atomic.Bool
}

func (b *gatedBackend) Load(ctx context.Context, h backend.Handle, off, n int64) ([]byte, error) {
	if b.armed.Load() && h.Type == backend.WALFile && strings.HasSuffix(h.Name, "/"+b.name) {
		select {
		case <-b.gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return b.Backend.Load(ctx, h, off, n)
}

// A segment whose download hangs (a slow request to an object store) must
// not hold back the rest of the window: when recovery moves on, the
// prefetcher keeps downloading the next segments beside it.
func TestPrefetchSlowSegmentDoesNotStallTheWindow(t *testing.T) {
	ctx := context.Background()
	gated := &gatedBackend{Backend: mem.New(), name: segName(1, 3), gate: make(chan struct{})}
	r := repotest.NewOn(t, gated, repo.Options{PackSize: 256 << 10})
	for no := uint64(1); no <= 12; no++ {
		name, data := seg(1, no, mib)
		mustSave(t, r, name, data)
	}
	gated.armed.Store(true)
	s := newSpool(t)
	var (
		res *stream.PrefetchResult
		err error
	)
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		res, err = stream.Prefetch(ctx, r, s, stream.PrefetchOptions{After: segName(1, 2), SegmentSize: mib,
			Count: 4, Parallel: 2, Idle: 200 * time.Millisecond, Poll: 5 * time.Millisecond})
	}()
	waitSpooled := func(no uint64) {
		t.Helper()
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		deadline := time.After(10 * time.Second)
		for !s.Has(segName(1, no)) {
			select {
			case <-tick.C:
			case <-deadline:
				close(gated.gate)
				t.Fatalf("%s not spooled within 10 s while %s hangs: spooled %v", segName(1, no), segName(1, 3), spoolNames(t, s))
			}
		}
	}
	waitSpooled(6)
	// Recovery got segment 3 elsewhere (restore_command downloads a
	// segment itself when the prefetcher is slow) and asks for 5.
	s.Want(segName(1, 5), mib)
	waitSpooled(9)
	close(gated.gate)
	<-finished
	if err != nil {
		t.Fatal(err)
	}
	if res.Fetched < 7 {
		t.Fatalf("fetched %d segments, want 4..9 and the released 3: %+v", res.Fetched, res)
	}
}
