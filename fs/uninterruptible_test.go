package fs

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pgvault/pgvault/fs/fstest"
	"github.com/pgvault/pgvault/repo"
	"github.com/pgvault/pgvault/repo/backend"
	"github.com/pgvault/pgvault/repo/repotest"
)

// slowPacks delays every pack read, as a distant object store does.
type slowPacks struct {
	backend.Backend
	delay time.Duration
}

func (s slowPacks) Load(ctx context.Context, h backend.Handle, off, n int64) ([]byte, error) {
	if h.Type == backend.PackFile {
		t := time.NewTimer(s.delay)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done(): // what a FUSE interrupt did to a request
			return nil, ctx.Err()
		}
	}
	return s.Backend.Load(ctx, h, off, n)
}

// TestRequestsOutlastSignals: a process that gets a signal it handles
// while it waits for the mount (PostgreSQL's processes get SIGUSR1,
// SIGHUP, SIGALRM and more, and do not retry open(2) on EINTR) still gets
// its answer, not EINTR.
func TestRequestsOutlastSignals(t *testing.T) {
	if err := CheckFUSE(); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	_, s, be := fstest.Store(t, fstest.SampleTree())
	r, err := repo.Open(ctx, slowPacks{be, 300 * time.Millisecond}, []byte(repotest.Password), repo.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	ov := openTestOverlay(t, r, s, t.TempDir())
	defer ov.Close(ctx)
	dir := t.TempDir()
	m, err := Mount(ctx, dir, NewInstantRoot(ov, InstantOptions{}), MountOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Unmount(ctx)

	// The lookups of base and base/1 load their folders' trees from the
	// slow repository; meanwhile the opening thread gets SIGURG (which
	// the Go runtime handles) every 10 ms.
	tids := make(chan int, 1)
	opened := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // the thread dies with the goroutine: its signal mask stays its own
		tids <- unix.Gettid()
		fd, err := syscall.Open(filepath.Join(dir, "base", "1", "16384"), syscall.O_RDONLY, 0) // no EINTR retry, as in PostgreSQL
		if err == nil {
			syscall.Close(fd)
		}
		opened <- err
	}()
	tid := <-tids
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	signals := 0
	for {
		select {
		case err := <-opened:
			if err != nil {
				t.Fatalf("open(2) while the process got %d signals: %v", signals, err)
			}
			if signals < 10 {
				t.Fatalf("only %d signals arrived while open(2) waited; the test proves nothing", signals)
			}
			return
		case <-tick.C:
			if unix.Tgkill(os.Getpid(), tid, unix.SIGURG) == nil {
				signals++
			}
		}
	}
}
