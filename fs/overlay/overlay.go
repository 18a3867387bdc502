package overlay

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pgvault/pgvault/fs/chunkread"
	"github.com/pgvault/pgvault/fs/inode"
	"github.com/pgvault/pgvault/internal/atomicfile"
	"github.com/pgvault/pgvault/repo"
)

// DefaultBlockSize is the unit of copy-on-write tracking: PostgreSQL's
// page size, so a page write never copies more than itself.
const DefaultBlockSize = 8192

// Files in the scratch folder.
const (
	scratchMeta    = "overlay.json"
	scratchJournal = "journal"
	scratchLock    = "lock"
	scratchUpper   = "upper"
)

// Sentinel errors of Open.
var (
	// ErrScratchInUse: another mount holds the scratch folder.
	ErrScratchInUse = errors.New("scratch folder is in use by another mount")
	// ErrScratchMismatch: the scratch folder holds the overlay of another
	// snapshot.
	ErrScratchMismatch = errors.New("scratch folder holds the overlay of another backup")
)

// Owner is a user and group ID.
type Owner struct{ UID, GID uint32 }

// Options configure Open.
type Options struct {
	// Scratch is the folder holding the overlay; created if missing.
	Scratch string
	// Owner is who the snapshot's files appear to belong to (PostgreSQL
	// refuses a data directory it does not own).
	Owner Owner
	// BlockSize is the unit of copy-on-write tracking; 0 means
	// DefaultBlockSize. A scratch folder keeps the size it was made with.
	BlockSize int
	// Prefetcher, if set, reads ahead of sequential readers of snapshot
	// content.
	Prefetcher *chunkread.Prefetcher
	// CopyOnRead caps the bytes of snapshot content that reads copy into
	// the scratch folder (see copyonread.go); 0 turns it off.
	CopyOnRead int64
	// Logger receives warnings and read errors; nil discards them.
	Logger *slog.Logger
	// Ephemeral says the scratch folder is deleted after Close and never
	// opened again (a verify or synthetic-backup boot): nothing in it is
	// made durable, since a crash loses it anyway. A replay's fsyncs
	// (each restartpoint's) and Close then cost no disk flush.
	Ephemeral bool
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// overlayMeta is scratch/overlay.json: which snapshot the overlay
// belongs to, and its block size.
type overlayMeta struct {
	Version   int       `json:"version"`
	Snapshot  string    `json:"snapshot"`
	BlockSize int       `json:"block_size"`
	Created   time.Time `json:"created"`
}

// Overlay is a writable view of one snapshot: the snapshot's tree with
// every change kept in a scratch folder. Its methods are safe for
// concurrent use.
//
// Locks, in the order they may be taken: a file's fileState.mu, then
// Overlay.mu (namespace and attributes), then the journal's. Nothing
// holds Overlay.mu while reading from the repository.
type Overlay struct {
	r        *repo.Repository
	snap     *repo.Snapshot
	dir      string
	upperDir string
	owner    Owner
	bs       int64
	pf       *chunkread.Prefetcher
	log      *slog.Logger
	now      func() time.Time
	lock     *os.File
	fresh    bool
	// ephemeral: see Options.Ephemeral.
	ephemeral bool

	mu      sync.Mutex
	nodes   map[uint64]*Node // every node reachable in the namespace (plus open removed ones until released)
	root    *Node
	nextIno uint64
	doomed  []*Node // removed files whose upper file goes at the next journal sync

	j   *journal
	cor *copyOnRead

	baseRead    atomic.Int64 // bytes read from the snapshot
	upperRead   atomic.Int64
	written     atomic.Int64
	readErrors  atomic.Int64
	firstErrMu  sync.Mutex
	firstErr    string
	closeOnce   sync.Once
	compactions atomic.Int64
	flushes     atomic.Int64 // fdatasyncs of upper files (the journal counts its own)

	recovering     chan struct{} // closed at the first request to the WAL view
	recoveringOnce sync.Once

	// noClones (guarded by mu) is set when hydration has copied the backup's
	// files: a hydrated overlay must not depend on the repository, so WAL
	// copies are real copies from then on.
	noClones bool

	walEntries walEntries // the WAL view's catalogue lookups
}

// Open opens the overlay of snapshot snap in opts.Scratch, creating it if
// the folder is new, and replays its journal. The scratch folder is
// locked until Close. A folder made for another snapshot is refused
// (ErrScratchMismatch), as is one another mount holds (ErrScratchInUse).
func Open(ctx context.Context, r *repo.Repository, snap *repo.Snapshot, opts Options) (*Overlay, error) {
	if opts.Scratch == "" {
		return nil, errors.New("no scratch folder given")
	}
	dir, err := filepath.Abs(opts.Scratch)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(dir, scratchUpper), 0o700); err != nil {
		return nil, fmt.Errorf("create scratch folder %s: %w", dir, err)
	}
	lock, err := os.OpenFile(filepath.Join(dir, scratchLock), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("scratch folder %s: %w", dir, err)
	}
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		lock.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: %s (stop the other pgvault mount or use another --scratch)", ErrScratchInUse, dir)
		}
		return nil, fmt.Errorf("lock scratch folder %s: %w", dir, err)
	}
	ov := &Overlay{
		r: r, snap: snap, dir: dir, upperDir: filepath.Join(dir, scratchUpper), owner: opts.Owner,
		pf: opts.Prefetcher, log: opts.Logger, now: opts.Now, lock: lock, ephemeral: opts.Ephemeral,
		nodes: map[uint64]*Node{}, nextIno: inode.OverlayBase, cor: newCopyOnRead(opts.CopyOnRead),
		recovering: make(chan struct{}),
	}
	if ov.log == nil {
		ov.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if ov.now == nil {
		ov.now = time.Now
	}
	removeTemps(dir)
	if err := ov.open(ctx, opts); err != nil {
		lock.Close()
		return nil, err
	}
	return ov, nil
}

// removeTemps removes what an atomic write (the journal's compaction,
// overlay.json) left behind when the process died between writing and
// renaming: with the lock held nobody else writes here.
func removeTemps(dir string) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return // open reports a folder it cannot read
	}
	for _, e := range ents {
		if atomicfile.IsTemp(e.Name()) {
			os.Remove(filepath.Join(dir, e.Name()))
		}
	}
}

func (ov *Overlay) open(ctx context.Context, opts Options) error {
	metaPath := filepath.Join(ov.dir, scratchMeta)
	data, err := os.ReadFile(metaPath)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if _, err := os.Stat(filepath.Join(ov.dir, scratchJournal)); err == nil {
			return fmt.Errorf("scratch folder %s has a journal but no %s: it is damaged; use a new --scratch", ov.dir, scratchMeta)
		}
		bs := opts.BlockSize
		if bs == 0 {
			bs = DefaultBlockSize
		}
		if bs < 512 || bs&(bs-1) != 0 {
			return fmt.Errorf("overlay block size %d: want a power of two of 512 or more", bs)
		}
		m := overlayMeta{Version: 1, Snapshot: ov.snap.ID, BlockSize: bs, Created: ov.now().UTC()}
		b, _ := json.MarshalIndent(m, "", "  ")
		if err := atomicfile.WriteFile(metaPath, append(b, '\n'), atomicfile.Options{}); err != nil {
			return fmt.Errorf("create the overlay description: %w", err)
		}
		ov.bs, ov.fresh = int64(bs), true
	case err != nil:
		return fmt.Errorf("read %s: %w", metaPath, err)
	default:
		var m overlayMeta
		if err := json.Unmarshal(data, &m); err != nil || m.Version != 1 || m.BlockSize < 512 || m.BlockSize&(m.BlockSize-1) != 0 {
			return fmt.Errorf("%s is not a pgvault overlay description (use a new --scratch)", metaPath)
		}
		if m.Snapshot != ov.snap.ID {
			return fmt.Errorf("%w: %s belongs to backup %.8s, not %s (use the same --backup or a new --scratch)", ErrScratchMismatch, ov.dir, m.Snapshot, ov.snap.ShortID())
		}
		ov.bs = int64(m.BlockSize)
	}

	root := ov.snap.RootNode
	ov.root = &Node{ino: inode.Root, kind: KindDir, base: &root, mode: 0o700, uid: ov.owner.UID, gid: ov.owner.GID, ctime: root.ModTime}
	ov.root.mtime.Store(root.ModTime.UnixNano())
	ov.nodes[inode.Root] = ov.root

	j, recs, err := openJournal(filepath.Join(ov.dir, scratchJournal))
	if err != nil {
		return err
	}
	ov.j = j
	j.noSync = opts.Ephemeral
	for i := range recs {
		if err := ov.apply(ctx, &recs[i]); err != nil {
			j.close()
			return fmt.Errorf("replay overlay journal %s, record %d: %w (the scratch folder is damaged; use a new --scratch)", j.path, i+1, err)
		}
	}
	if err := ov.afterReplay(); err != nil {
		j.close()
		return err
	}
	if j.data > 64 {
		if err := ov.Compact(ctx); err != nil {
			j.close()
			return err
		}
	}
	return nil
}

// afterReplay opens the upper files the journal describes, cuts them to
// their file's size (bytes past the end may be left over from writes that
// were never synced) and removes upper files of nodes that no longer
// exist.
func (ov *Overlay) afterReplay() error {
	live := map[string]bool{}
	for _, n := range ov.nodes {
		if n.kind != KindFile {
			continue
		}
		f := n.file
		name := upperName(n.ino)
		p := filepath.Join(ov.upperDir, name)
		fi, err := os.Stat(p)
		exists := err == nil
		switch {
		case f.local:
			live[name] = true
			if exists {
				f.size = fi.Size()
				n.mtime.Store(fi.ModTime().UnixNano())
				if err := ov.openUpperLocked(n); err != nil {
					return err
				}
			} else if n.base != nil {
				return fmt.Errorf("overlay upper file %s of %s is missing: the scratch folder was damaged (use a new --scratch)", p, ov.pathOfLocked(n))
			} else {
				f.size = 0
			}
		case !f.present.empty():
			if !exists {
				return fmt.Errorf("overlay upper file %s of %s is missing: the scratch folder was damaged (use a new --scratch)", p, ov.pathOfLocked(n))
			}
			live[name] = true
			if fi.Size() > f.size {
				if err := os.Truncate(p, f.size); err != nil {
					return fmt.Errorf("overlay: %w", err)
				}
			}
			if err := ov.openUpperLocked(n); err != nil {
				return err
			}
		}
	}
	ents, err := os.ReadDir(ov.upperDir)
	if err != nil {
		return fmt.Errorf("overlay: %w", err)
	}
	for _, e := range ents {
		if !live[e.Name()] {
			os.Remove(filepath.Join(ov.upperDir, e.Name()))
		}
	}
	return nil
}

// Recovering returns a channel that is closed at MarkRecovering: when
// PostgreSQL first asks the mount's WAL view for a file, its
// restore_command runs, so the server has started and is in archive
// recovery.
func (ov *Overlay) Recovering() <-chan struct{} { return ov.recovering }

// MarkRecovering closes the Recovering channel; the WAL view calls it at
// every request, only the first one counts.
func (ov *Overlay) MarkRecovering() { ov.recoveringOnce.Do(func() { close(ov.recovering) }) }

// Fresh reports whether the scratch folder was new (nothing to replay):
// the caller then prepares the data directory (recovery configuration).
func (ov *Overlay) Fresh() bool { return ov.fresh }

// BlockSize is the overlay's unit of copy-on-write tracking.
func (ov *Overlay) BlockSize() int64 { return ov.bs }

// Snapshot is the snapshot the overlay shows.
func (ov *Overlay) Snapshot() *repo.Snapshot { return ov.snap }

// Scratch is the overlay's folder.
func (ov *Overlay) Scratch() string { return ov.dir }

// Root is the view's root directory.
func (ov *Overlay) Root() *Node { return ov.root }

// Owner is who the snapshot's files appear to belong to.
func (ov *Overlay) Owner() Owner { return ov.owner }

// Now reads the overlay's clock (Options.Now).
func (ov *Overlay) Now() time.Time { return ov.now() }

// Logger is where the overlay logs (Options.Logger).
func (ov *Overlay) Logger() *slog.Logger { return ov.log }

// Repository is the repository the snapshot's content comes from.
func (ov *Overlay) Repository() *repo.Repository { return ov.r }
