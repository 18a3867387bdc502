package backup

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/pgvault/pgvault/repo/repotest"
)

// recordingRestorer records what restoreTree asks of it, creating nothing
// but the folders (so that folder metadata and the final sync have
// something to work on), and fails the file failAt. A file started after
// the failure waits for its context to end, so each worker starts at most
// one before the failure cancels the rest; a pool that does not cancel
// starts more, and once more than allowed have started they all go on
// (the test has failed by then).
type recordingRestorer struct {
	failAt  string
	allowed int
	release chan struct{}

	mu        sync.Mutex
	calls     []string // dir and symlink calls, in order
	files     []string // file calls, in order of their start
	afterFail int      // file calls started after the failure
	failed    bool
	finished  bool
}

func (f *recordingRestorer) dir(dst string) error {
	f.calls = append(f.calls, "dir "+dst)
	return os.MkdirAll(dst, 0o700)
}

func (f *recordingRestorer) symlink(link, target string) error {
	f.calls = append(f.calls, "symlink "+link+" -> "+target)
	return nil
}

func (f *recordingRestorer) file(ctx context.Context, j fileJob, override []byte) (int64, error) {
	f.mu.Lock()
	f.files = append(f.files, j.path)
	if j.path == f.failAt {
		f.failed = true
		f.mu.Unlock()
		return 0, errors.New("injected failure")
	}
	after := f.failed
	if after {
		f.afterFail++
		if f.afterFail == f.allowed+1 {
			close(f.release)
		}
	}
	f.mu.Unlock()
	if after {
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-f.release:
		}
	}
	return j.node.Size, nil
}

func (f *recordingRestorer) finish([]string, []fileJob) error {
	f.finished = true
	return nil
}

// TestRestoreTree checks the walk both restores share: folders before
// their content, tablespace links, every file once, and that the first
// failing file stops the files not started yet.
func TestRestoreTree(t *testing.T) {
	ctx := context.Background()
	r, _ := repotest.New(t)
	src := t.TempDir()
	for i := range 40 {
		p := filepath.Join(src, "base", "5", fmt.Sprintf("%d", 16384+i))
		os.MkdirAll(filepath.Dir(p), 0o700)
		os.WriteFile(p, []byte(strings.Repeat("x", i+1)), 0o600)
	}
	os.MkdirAll(filepath.Join(src, "pg_tblspc", "16500", "PG_15_1"), 0o700)
	os.WriteFile(filepath.Join(src, "pg_tblspc", "16500", "PG_15_1", "f"), []byte("ts"), 0o600)
	os.Symlink("/elsewhere/pg_wal", filepath.Join(src, "pg_wal"))
	s := saveBackup(t, r, src)
	info, err := InfoOf(s)
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name     string
		parallel int
		failAt   string
	}{
		{"all files", 4, ""},
		{"failure, one at a time", 1, "base/5/16390"},
		{"failure, in parallel", 4, "base/5/16390"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			target := filepath.Join(t.TempDir(), "data")
			tsLoc := filepath.Join(t.TempDir(), "ts")
			locations := map[uint32]string{16500: tsLoc}
			roots := []string{target, tsLoc}
			place := &recordingRestorer{failAt: tt.failAt, allowed: tt.parallel - 1, release: make(chan struct{})}
			files, progress, err := restoreTree(ctx, r, s, info, target, locations, roots, RestoreOptions{Parallel: tt.parallel}, nil, place)
			if tt.failAt != "" {
				if err == nil || !strings.Contains(err.Error(), "injected failure") {
					t.Fatalf("err = %v, want the injected failure", err)
				}
				// Files already under way may finish (one per other
				// worker); no new one starts once the failure has
				// cancelled the rest.
				if place.afterFail > place.allowed {
					t.Errorf("%d files started after the failure, want at most %d", place.afterFail, place.allowed)
				}
				if place.finished {
					t.Error("finish ran after a failed file")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if files != 41 || progress != 40*41/2+2 || len(place.files) != 41 || !place.finished {
				t.Fatalf("files %d, progress %d, file calls %d, finished %v", files, progress, len(place.files), place.finished)
			}
			link := filepath.Join(target, "pg_tblspc", "16500")
			for _, want := range [][2]string{
				{"dir " + filepath.Join(target, "base"), "dir " + filepath.Join(target, "base", "5")},
				{"dir " + filepath.Join(target, "pg_tblspc"), "symlink " + link + " -> " + tsLoc},
				{"symlink " + link + " -> " + tsLoc, "dir " + tsLoc},
				{"dir " + tsLoc, "dir " + filepath.Join(tsLoc, "PG_15_1")},
			} {
				i, j := slices.Index(place.calls, want[0]), slices.Index(place.calls, want[1])
				if i < 0 || j < 0 || i > j {
					t.Errorf("%q must come before %q; calls %q", want[0], want[1], place.calls)
				}
			}
			if !slices.Contains(place.calls, "symlink "+filepath.Join(target, "pg_wal")+" -> /elsewhere/pg_wal") {
				t.Errorf("no pg_wal link; calls %q", place.calls)
			}
			if !slices.Contains(place.files, "pg_tblspc/16500/PG_15_1/f") {
				t.Errorf("the tablespace's file was not restored: %q", place.files)
			}
		})
	}
}

var _ restorer = (*recordingRestorer)(nil)
