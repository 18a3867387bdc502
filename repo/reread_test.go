package repo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/pgvault/pgvault/repo/backend"
	"github.com/pgvault/pgvault/repo/backend/mem"
	"github.com/pgvault/pgvault/repo/pack"
)

// damagingReads flips a bit in the first `damage` loads of each object of
// one type, as a flaky link or buffer would; the stored objects stay whole.
type damagingReads struct {
	backend.Backend
	typ    backend.FileType
	damage int

	mu    sync.Mutex
	seen  map[string]int // loads per object
	loads int
}

func (d *damagingReads) Load(ctx context.Context, h backend.Handle, off, n int64) ([]byte, error) {
	b, err := d.Backend.Load(ctx, h, off, n)
	if err != nil || h.Type != d.typ || len(b) == 0 {
		return b, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.loads++
	if d.seen == nil {
		d.seen = map[string]int{}
	}
	if d.seen[h.Name] < d.damage {
		b[len(b)/2] ^= 0x10
	}
	d.seen[h.Name]++
	return b, nil
}

func (d *damagingReads) count() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.loads
}

// TestDamagedReadIsReadAgain: a read whose bytes fail authentication is
// read again; one damaged read costs nothing but a warning, damage on every
// read is still an error that names the object, and never wrong bytes.
func TestDamagedReadIsReadAgain(t *testing.T) {
	const walName = "000000010000000000000003"
	// Few objects: each damaged one waits for its re-reads in turn.
	files := map[string][]byte{"PG_VERSION": []byte("15\n"), "base/1/1259": randBytes(3, 64<<10)}
	wal := randBytes(7, 100<<10)
	kinds := []struct {
		name string
		typ  backend.FileType
		// read does what needs objects of typ with a repository opened on
		// the damaging backend (opening it reads every index object).
		read func(ctx context.Context, r *Repository, snap string) error
	}{
		{"index", backend.IndexFile, func(context.Context, *Repository, string) error { return nil }},
		{"snapshot", backend.SnapshotFile, func(ctx context.Context, r *Repository, snap string) error {
			_, err := r.LoadSnapshot(ctx, snap)
			return err
		}},
		{"WAL catalogue entry", backend.WALFile, func(ctx context.Context, r *Repository, _ string) error {
			_, err := r.LoadWALFile(ctx, 1, walName)
			return err
		}},
		{"blob", backend.PackFile, func(ctx context.Context, r *Repository, _ string) error {
			got, _, err := r.LoadWAL(ctx, 1, walName)
			if err == nil && !bytes.Equal(got, wal) {
				err = errors.New("WAL read back with different bytes and no error")
			}
			return err
		}},
		{"pack header", backend.PackFile, func(ctx context.Context, r *Repository, _ string) error {
			// A pack rebuild-index finds damaged is left out of the index.
			res, err := r.RebuildIndex(ctx)
			if err == nil && len(res.DamagedPacks) > 0 {
				err = fmt.Errorf("%w: %v", pack.ErrCorrupt, res.Problems)
			}
			return err
		}},
	}
	for _, k := range kinds {
		// Three reads are made; a third damaged one means the stored
		// object is damaged.
		for _, damaged := range []int{1, 2, 3} {
			t.Run(fmt.Sprintf("%s, %d damaged reads", k.name, damaged), func(t *testing.T) {
				t.Parallel()
				be := mem.New()
				r := newTestRepoOn(t, be, Options{PackSize: 256 << 10})
				snap := writeSnapshot(t, r, files)
				if _, err := r.SaveWAL(ctx, 1, walName, wal, false); err != nil {
					t.Fatal(err)
				}
				if err := r.Close(); err != nil {
					t.Fatal(err)
				}
				d := &damagingReads{Backend: be, typ: k.typ, damage: damaged}
				err := func() error {
					r, err := Open(ctx, d, []byte(testPassword), Options{})
					if err != nil {
						return err
					}
					defer r.Close()
					return k.read(ctx, r, snap.ID)
				}()
				if want := 1 + min(damaged, len(rereadDelays)); d.count() < want {
					t.Fatalf("%d loads of %s objects, want at least %d", d.count(), k.name, want)
				}
				if damaged < 3 { // a whole read comes before the reads run out
					if err != nil {
						t.Fatalf("%d damaged read(s), then a whole one: %v", damaged, err)
					}
					return
				}
				if !isDamage(err) {
					t.Fatalf("every read damaged: err = %v, want damage", err)
				}
			})
		}
	}
}

// nonAtomicStore shows a truncated index object, as a store without atomic
// uploads does while a writer retries a failed upload, and puts the whole
// object back shortly after a reader first sees the truncated one.
type nonAtomicStore struct {
	*mem.Backend
	h     backend.Handle
	whole []byte
	once  sync.Once
	done  chan struct{}
}

func (s *nonAtomicStore) Load(ctx context.Context, h backend.Handle, off, n int64) ([]byte, error) {
	b, err := s.Backend.Load(ctx, h, off, n)
	if h == s.h {
		s.once.Do(func() {
			time.AfterFunc(50*time.Millisecond, func() {
				s.Backend.Save(context.Background(), s.h, s.whole)
				close(s.done)
			})
		})
	}
	return b, err
}

// TestReaderOutlastsWritersRetry: a repository opened while another
// process's index upload is being retried opens once the retry lands.
func TestReaderOutlastsWritersRetry(t *testing.T) {
	be := mem.New()
	r := newTestRepoOn(t, be, Options{PackSize: 256 << 10})
	writeSnapshot(t, r, sampleFiles())
	r.Close()
	var h backend.Handle
	be.List(ctx, backend.IndexFile, func(fi backend.FileInfo) error {
		h = backend.Handle{Type: backend.IndexFile, Name: fi.Name}
		return nil
	})
	whole, err := be.Load(ctx, h, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := be.Save(ctx, h, whole[:len(whole)/2]); err != nil {
		t.Fatal(err)
	}
	s := &nonAtomicStore{Backend: be, h: h, whole: whole, done: make(chan struct{})}
	r2, err := Open(ctx, s, []byte(testPassword), Options{})
	if err != nil {
		t.Fatalf("open while an index upload is retried: %v", err)
	}
	r2.Close()
	<-s.done
}

// TestCheckReadsDamageAgain: `repo check` calls damage in storage only what
// every read shows; a damaged read followed by a whole one is a warning.
func TestCheckReadsDamageAgain(t *testing.T) {
	for _, tc := range []struct {
		typ     backend.FileType
		damaged int
		want    string // "warning" or "error"
	}{
		{backend.PackFile, 1, "warning"},
		{backend.IndexFile, 2, "warning"},
		{backend.PackFile, 3, "error"},
		{backend.IndexFile, 3, "error"},
	} {
		t.Run(fmt.Sprintf("%v, %d damaged reads", tc.typ, tc.damaged), func(t *testing.T) {
			t.Parallel()
			be := mem.New()
			r := newTestRepoOn(t, be, Options{})
			writeSnapshot(t, r, map[string][]byte{"PG_VERSION": []byte("15\n")})
			r.Close()
			r2, err := Open(ctx, be, []byte(testPassword), Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer r2.Close()
			// Only the check's own reads are damaged, not the opening.
			r2.be = &damagingReads{Backend: be, typ: tc.typ, damage: tc.damaged}
			res, err := r2.Check(ctx, CheckOptions{ReadData: true})
			if err != nil {
				t.Fatal(err)
			}
			switch tc.want {
			case "warning":
				if len(res.Errors) != 0 || !hasProblem(res.Warnings, "", "then whole") {
					t.Fatalf("errors %v, warnings %v: want only a warning that a re-read was whole", res.Errors, res.Warnings)
				}
			case "error":
				if !hasProblem(res.Errors, "", "does not match its name") {
					t.Fatalf("errors %v: want the damage reported", res.Errors)
				}
			}
		})
	}
}
