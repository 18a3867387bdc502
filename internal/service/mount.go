package service

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"time"

	"github.com/pgvault/pgvault/backup"
	pgfs "github.com/pgvault/pgvault/fs"
	"github.com/pgvault/pgvault/fs/chunkread"
	"github.com/pgvault/pgvault/fs/overlay"
	"github.com/pgvault/pgvault/fs/verify"
	"github.com/pgvault/pgvault/internal/pg/wal"
	"github.com/pgvault/pgvault/repo"
)

// ErrUnknownUser is matched when the OS user a mount or a boot verify
// should run PostgreSQL as does not exist (a usage mistake).
var ErrUnknownUser = errors.New("unknown OS user")

// cacheHeadroom is the memory a mount or verify needs besides its chunk
// cache: FUSE request buffers, decoders, the index and the tree.
const cacheHeadroom = 128 << 20

// openCached opens the repository with a chunk cache of the given size.
// The cache is most of such a process's live memory, and Go's collector
// lets the heap grow to twice what is live: a soft memory limit of the
// cache plus cacheHeadroom keeps the process near its cache size instead
// (GOMEMLIMIT, when set, wins). It is process-wide: mount and verify are
// the whole work of their process.
func (s *Site) openCached(ctx context.Context, cacheSize int64, workflow string) (*repo.Repository, error) {
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(cacheSize + cacheHeadroom)
	}
	return s.Open(ctx, Access{CacheSize: cacheSize, Reads: workflow})
}

// shortRecovery is the most WAL segments a recovery may replay for the
// instant mount to turn PostgreSQL's WAL prefetcher off. The prefetcher
// decodes up to 512 kB ahead of replay and, for that, runs
// restore_command for the next segment (and the one after) before the
// last records before it are replayed: in a recovery to consistency that
// held the first query back by a 16 MiB copy and fsync and a failed cp,
// 180 ms from the server's start to read-only connections instead of
// 46 ms (by hand, scale 100). A recovery this short has no data blocks
// worth prefetching; a long one keeps it.
const shortRecovery = 2

// MountOptions configure Mount. Without Backup the mount is the
// read-only browse view of every backup and the WAL archive; with it, one
// backup as a data directory PostgreSQL starts on (instant mode).
type MountOptions struct {
	// Mountpoint is an absolute path.
	Mountpoint string
	// Backup is the backup of instant mode: an ID, a prefix or "latest".
	Backup string
	// Recovery is the recovery target, timeline and action of instant
	// mode (its RestoreCommand is the mount's own).
	Recovery   wal.RecoveryConfig
	NoRecovery bool
	// KeepArchiveMode keeps the backup's archive_mode (by default it is
	// turned off, so the copy never archives into the original's archive).
	KeepArchiveMode bool
	Scratch         string
	// Owner is the OS user that runs PostgreSQL and owns the files.
	Owner       string
	CacheSize   int64
	CopyOnRead  int64
	Hydrate     bool
	HydrateRate int64
	// Warm loads what the server's start and first connections read into
	// the chunk cache in the background.
	Warm        bool
	Passthrough bool
	// Prefetch is how many chunks are read ahead of a sequential reader
	// (0: off); Readahead the kernel's read_ahead_kb.
	Prefetch  int
	Readahead int
	Debug     bool
}

// MountReport is what Mount mounted.
type MountReport struct {
	Mountpoint  string                 `json:"mountpoint"`
	Mode        string                 `json:"mode"` // browse or instant
	Snapshots   int                    `json:"snapshots,omitempty"`
	ID          string                 `json:"id,omitempty"`
	Scratch     string                 `json:"scratch,omitempty"`
	Reused      bool                   `json:"reused_scratch"`
	Owner       string                 `json:"owner,omitempty"`
	Plan        *backup.RestorePlan    `json:"plan,omitempty"`
	Prepared    *overlay.PrepareResult `json:"prepared,omitempty"`
	MountSecond float64                `json:"mount_seconds"`
}

// Mounted is a mount being served; Serve waits for its end.
type Mounted struct {
	Report MountReport
	site   *Site
	r      *repo.Repository
	m      *pgfs.Mounted
	ov     *overlay.Overlay
	stopBG context.CancelFunc
	bg     []chan struct{} // background work to wait for before unmounting
}

// Mount mounts (see MountOptions) and returns once the mount is visible.
func (s *Site) Mount(ctx context.Context, o MountOptions) (_ *Mounted, err error) {
	start := time.Now()
	instant := o.Backup != ""
	// Cheap refusals before the repository is opened.
	if err := pgfs.CheckMountpoint(o.Mountpoint); err != nil {
		return nil, err
	}
	type lookup struct {
		u   verify.OSUser
		err error
	}
	owned := make(chan lookup, 1)
	if instant {
		// The owner's lookup goes through NSS (5-8 ms with a cold page
		// cache); opening the repository may run the KDF: let them overlap.
		go func() {
			u, err := verify.LookupUser(o.Owner)
			owned <- lookup{u, err}
		}()
	}
	r, err := s.openCached(ctx, o.CacheSize, "mount")
	if err != nil {
		return nil, err
	}
	bg, stopBG := context.WithCancel(context.WithoutCancel(ctx))
	mt := &Mounted{site: s, r: r, stopBG: stopBG}
	defer func() {
		if err != nil {
			mt.release(ctx)
		}
	}()
	var pf *chunkread.Prefetcher
	if o.Prefetch > 0 {
		pf = chunkread.NewPrefetcher(bg, r, 8, o.Prefetch)
	}
	mopts := pgfs.MountOptions{Debug: o.Debug, Logger: s.log(), MaxReadAhead: o.Readahead << 10}

	if !instant {
		root, err := pgfs.NewBrowseRoot(ctx, r, pgfs.BrowseOptions{Prefetcher: pf, Logger: s.log()})
		if err != nil {
			return nil, err
		}
		snaps, _ := r.Snapshots(ctx)
		mopts.ReadOnly, mopts.FsName = true, "pgvault-browse"
		if mt.m, err = pgfs.Mount(ctx, o.Mountpoint, root, mopts); err != nil {
			return nil, err
		}
		mt.Report = MountReport{Mountpoint: o.Mountpoint, Mode: "browse", Snapshots: len(snaps), MountSecond: time.Since(start).Seconds()}
		return mt, nil
	}

	lu := <-owned
	if lu.err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnknownUser, lu.err)
	}
	owner := lu.u
	rc := o.Recovery
	cat, err := LoadCatalog(ctx, r)
	if err != nil {
		return nil, err
	}
	plan, snap, err := cat.PlanRestore(backup.PlanInput{Ref: o.Backup, Target: rc.Target, Timeline: rc.Timeline, FilesOnly: o.NoRecovery})
	if err != nil {
		return nil, err
	}
	var prepare overlay.PrepareOptions
	prepare.Owner = overlay.Owner{UID: owner.UID, GID: owner.GID}
	prepare.Note = fmt.Sprintf("pgvault instant mount of backup %s (%s) at %s", snap.ShortID(), rc.Target, s.now().UTC().Format(time.RFC3339))
	if !o.KeepArchiveMode {
		prepare.Settings = append(prepare.Settings, wal.Setting{Name: "archive_mode", Value: "off"})
	}
	if !o.NoRecovery {
		// WAL comes through the mount itself (pgvault reads the repository
		// as root): PostgreSQL's user needs no access to the repository.
		rc.RestoreCommand = pgfs.WALRestoreCommand(o.Mountpoint)
		prepare.Recovery = &rc
		if plan.Segments <= shortRecovery {
			prepare.Settings = append(prepare.Settings, wal.Setting{Name: "recovery_prefetch", Value: "off"})
		}
	}
	if mt.ov, err = overlay.Open(ctx, r, snap, overlay.Options{Scratch: o.Scratch, Owner: prepare.Owner, Prefetcher: pf, CopyOnRead: o.CopyOnRead, Logger: s.log()}); err != nil {
		return nil, err
	}
	ov := mt.ov
	// What the server's start reads, loaded from now on: the preparation
	// below and the server's start then find most of it in memory.
	if o.Warm {
		mt.background(func() {
			res := ov.WarmStartup(bg, o.CacheSize/4)
			s.log().Info("folder listings and control files loaded into the chunk cache", "folders", res.Folders, "files", res.Files, "bytes", res.Bytes, "requests", res.Requests, "seconds", res.Duration.Seconds())
		})
	}
	mt.Report = MountReport{Mountpoint: o.Mountpoint, Mode: "instant", ID: snap.ID, Scratch: ov.Scratch(), Reused: !ov.Fresh(), Owner: owner.Name, Plan: plan}
	if ov.Fresh() {
		if mt.Report.Prepared, err = ov.Prepare(ctx, prepare); err != nil {
			return nil, err
		}
	}
	instOpts := pgfs.InstantOptions{Passthrough: o.Passthrough, ServeWAL: true, SegmentSize: plan.SegmentSize}
	if !o.NoRecovery && !mt.Report.Reused {
		// A reused overlay's server resumes from its own checkpoint.
		instOpts.FirstSegment = plan.FirstSegment()
	}
	if mt.m, err = pgfs.Mount(ctx, o.Mountpoint, pgfs.NewInstantRoot(ov, instOpts), mopts); err != nil {
		return nil, err
	}
	mt.Report.MountSecond = time.Since(start).Seconds()
	if o.Warm {
		waitRecovery := !o.NoRecovery && !mt.Report.Reused
		mt.background(func() {
			if waitRecovery {
				// Not before the server asks for its first WAL: until then
				// it is starting on a cold page cache, and a warm-up would
				// only take the CPU and disk its start needs. From then on
				// it mostly waits for WAL to be copied and synced, and its
				// first connection comes after that.
				select {
				case <-ov.Recovering():
				case <-bg.Done():
					return
				}
			}
			res := ov.WarmCatalogs(bg, o.CacheSize/4)
			s.log().Info("system catalogs loaded into the chunk cache", "files", res.Files, "bytes", res.Bytes, "requests", res.Requests, "seconds", res.Duration.Seconds())
		})
	}
	if o.Hydrate {
		mt.background(func() {
			res, err := ov.Hydrate(bg, overlay.HydrateOptions{Rate: o.HydrateRate})
			switch {
			case err != nil && !errors.Is(err, context.Canceled):
				s.log().Error("hydration stopped", "err", err)
			case err == nil:
				s.log().Info("hydration done: the overlay holds the whole backup", "files", res.Files, "bytes", res.Bytes, "seconds", res.Duration.Seconds())
			}
		})
	}
	return mt, nil
}

// background runs f until it returns; unmounting stops and awaits it.
func (mt *Mounted) background(f func()) {
	done := make(chan struct{})
	mt.bg = append(mt.bg, done)
	go func() {
		defer close(done)
		f()
	}()
}

// stopBackground cancels the background work and waits for it.
func (mt *Mounted) stopBackground() {
	mt.stopBG()
	for _, done := range mt.bg {
		<-done
	}
}

// release stops the background work and closes the overlay and the
// repository.
func (mt *Mounted) release(ctx context.Context) error {
	mt.stopBackground()
	var err error
	if mt.ov != nil {
		err = mt.ov.Close(context.WithoutCancel(ctx))
		st := mt.ov.Stats()
		mt.site.log().Info("unmounted", "mountpoint", mt.Report.Mountpoint, "base_bytes_read", st.BaseBytesRead, "copied_on_read", st.CopiedOnRead, "bytes_written", st.BytesWritten, "read_errors", st.ReadErrors)
	}
	mt.r.Close()
	return err
}

// ServeOptions say how Serve talks to the person who mounted.
type ServeOptions struct {
	// Busy is called once when the mountpoint is busy at unmount (a
	// server still runs on it); Serve keeps retrying.
	Busy func(dir string)
	// Detach, when it delivers, makes a busy mount detach (umount -l)
	// instead of waiting; Detached is called then.
	Detach   <-chan os.Signal
	Detached func(dir string)
}

// Serve serves the mount until it goes away (pgvault umount) or ctx ends
// (SIGINT, SIGTERM); then it unmounts, retrying while the mountpoint is
// busy, and closes everything.
func (mt *Mounted) Serve(ctx context.Context, o ServeOptions) error {
	err := mt.unmountWhenDone(ctx, o)
	if rerr := mt.release(ctx); err == nil {
		err = rerr
	}
	return err
}

func (mt *Mounted) unmountWhenDone(ctx context.Context, o ServeOptions) error {
	m := mt.m
	select {
	case <-m.Done():
		return nil
	case <-ctx.Done():
	}
	mt.stopBackground()
	told := false
	for {
		uctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := m.Unmount(uctx)
		cancel()
		if err == nil {
			return nil
		}
		if !errors.Is(err, pgfs.ErrMountpointBusy) {
			return err
		}
		if !told && o.Busy != nil {
			o.Busy(m.Dir())
			told = true
		}
		retry := time.NewTimer(time.Second)
		select {
		case <-o.Detach:
			retry.Stop()
			if _, err := pgfs.Unmount(context.Background(), m.Dir(), true); err != nil {
				return err
			}
			if o.Detached != nil {
				o.Detached(m.Dir())
			}
			return nil
		case <-m.Done():
			retry.Stop()
			return nil
		case <-retry.C:
		}
	}
}
