package backup

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/pgvault/pgvault/internal/pg/wal"
	"github.com/pgvault/pgvault/repo"
	"github.com/pgvault/pgvault/repo/backend"
	"github.com/pgvault/pgvault/repo/backend/mem"
	"github.com/pgvault/pgvault/repo/repotest"
)

// walLooks tells on a channel of the WAL catalogue entries it has read
// (those read while nobody listens are not told).
type walLooks struct {
	backend.Backend
	looked chan string
}

func (w *walLooks) Load(ctx context.Context, h backend.Handle, off, n int64) ([]byte, error) {
	b, err := w.Backend.Load(ctx, h, off, n)
	if h.Type == backend.WALFile {
		select {
		case w.looked <- h.Name:
		default:
		}
	}
	return b, err
}

func TestStreamedWALWait(t *testing.T) {
	ctx := context.Background()
	looks := &walLooks{Backend: mem.New(), looked: make(chan string, 1)}
	r := repotest.NewOn(t, looks, repo.Options{PackSize: 256 << 10})
	if streamerActive(ctx, r) {
		t.Fatal("no streamer, yet one is active")
	}
	l, err := r.Lock(ctx, repo.LockConcurrent, "wal stream")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Unlock(ctx)
	if !streamerActive(ctx, r) {
		t.Fatal("the streamer's lock is not seen")
	}

	const seg = 16 << 20
	stop := pglogrepl.LSN(3<<24 + 5000) // 5000 bytes into segment 3
	name := wal.SegmentOf(1, stop, seg).Name(seg)
	// Not there yet: a short wait ends with a warning that says why.
	err = waitForStreamedWAL(ctx, r, 1, stop, seg, 100*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), name) {
		t.Fatalf("wait without WAL: %v", err)
	}
	// A partial that ends before the stop position is not enough...
	r.SaveWAL(ctx, 1, name+".partial", make([]byte, 4000), true)
	if err := waitForStreamedWAL(ctx, r, 1, stop, seg, 100*time.Millisecond); err == nil {
		t.Fatal("a partial short of the stop position satisfied the wait")
	}
	// ...one that reaches past it is, when it is stored while the wait
	// runs: once the wait has found the short one.
	for len(looks.looked) > 0 {
		<-looks.looked
	}
	done := make(chan error, 1)
	go func() { done <- waitForStreamedWAL(ctx, r, 1, stop, seg, 10*time.Second) }()
	timeout := time.After(5 * time.Second)
	for looked := ""; !strings.HasSuffix(looked, name+".partial"); {
		select {
		case looked = <-looks.looked:
		case err := <-done:
			t.Fatalf("the wait ended before the WAL was stored: %v", err)
		case <-timeout:
			t.Fatal("the wait did not look for the partial within 5 s")
		}
	}
	r.SaveWAL(ctx, 1, name+".partial", make([]byte, 6000), true)
	if err := <-done; err != nil {
		t.Fatalf("wait with the WAL stored: %v", err)
	}
}

func TestNamesRepository(t *testing.T) {
	for _, tc := range []struct {
		cmd, location string
		want          bool
	}{
		{"PGVAULT_REPO=/srv/repo pgvault wal push %p", "file:///srv/repo", true},
		{"pgvault --repo '/srv/repo' wal push %p", "file:///srv/repo", true},
		{"pgvault --repo file:///srv/repo wal push %p", "file:///srv/repo", true},
		{"pgvault --repo /srv/repo/ wal push %p", "file:///srv/repo", true},
		{"PGVAULT_REPO=/srv/repo2 pgvault wal push %p", "file:///srv/repo", false},
		{"PGVAULT_REPO=/srv/repo.old pgvault wal push %p", "file:///srv/repo", false},
		{"PGVAULT_REPO=/old/srv/repo pgvault wal push %p", "file:///srv/repo", false},
		{"PGVAULT_REPO=/srv/repo2 X=/srv/repo pgvault wal push %p", "file:///srv/repo", true},
		{"pgvault --config /etc/pgvault.yaml wal push %p", "file:///srv/repo", false},
		{"PGVAULT_REPO='s3://bkt/db1?endpoint=http://127.0.0.1:9000' pgvault wal push %p", "s3://bkt/db1 (http://127.0.0.1:9000)", true},
		{"PGVAULT_REPO='s3://bkt/db10?endpoint=x' pgvault wal push %p", "s3://bkt/db1 (x)", false},
		{"pgvault --repo sftp://u@h:22/b wal push %p", "sftp://u@h:22/b", true},
		{"pgvault wal push %p", "mem:", false},
		{"pgvault wal push %p /", "file:///", false},
	} {
		if got := namesRepository(tc.cmd, tc.location); got != tc.want {
			t.Errorf("namesRepository(%q, %q) = %v, want %v", tc.cmd, tc.location, got, tc.want)
		}
	}
}
