package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/pgvault/pgvault/backup"
	pgfs "github.com/pgvault/pgvault/fs"
	"github.com/pgvault/pgvault/fs/verify"
	"github.com/pgvault/pgvault/repo"
	"github.com/pgvault/pgvault/stream/wal"
)

type mountOptions struct {
	backup       string
	target       restoreOptions // --to*, --target-*, --timeline
	scratch      string
	owner        string
	cacheSize    string
	copyOnRead   string
	hydrate      bool
	warm         bool
	hydrateRate  string
	passthrough  bool
	noRecovery   bool
	keepArchive  bool
	prefetch     int
	readahead    int
	debug        bool
	targetAction string
}

func mountCommand() *cli.Command {
	var o mountOptions
	return &cli.Command{
		Name:  "mount",
		Usage: "browse every backup and the WAL archive as files, or mount one backup as a data directory PostgreSQL starts on at once",
		Description: "Without --backup: a read-only view, snapshots/<id>/ (each backup's data directory), snapshots/latest and wal/<timeline>/<file>.\n" +
			"With --backup: one data directory, ready for pg_ctl start: owned by --owner, mode 0700, recovery configured, every write kept in\n" +
			"a copy-on-write overlay in --scratch (the repository is never written). Runs until Ctrl-C, SIGTERM or `pgvault umount`.",
		ArgsUsage: "MOUNTPOINT",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "backup", Destination: &o.backup, Usage: "instant mode: mount backup `ID` (or latest; with --to, the newest backup before the target)"},
			&cli.StringFlag{Name: "scratch", Destination: &o.scratch, Usage: "instant mode: `DIR` for the copy-on-write overlay (reuse it to get the same data directory back)"},
			&cli.StringFlag{Name: "owner", Destination: &o.owner, Value: "postgres", Usage: "instant mode: OS `USER` that runs PostgreSQL and owns the files"},
			&cli.StringFlag{Name: "to", Destination: &o.target.toTime, Usage: "recover to `TIME` (RFC 3339 or \"2026-01-02 15:04:05.123456+00\")"},
			&cli.StringFlag{Name: "to-lsn", Destination: &o.target.toLSN, Usage: "recover to WAL location `LSN`"},
			&cli.StringFlag{Name: "to-xid", Destination: &o.target.toXID, Usage: "recover to the commit of transaction `XID`"},
			&cli.StringFlag{Name: "to-name", Destination: &o.target.toName, Usage: "recover to restore point `NAME`"},
			&cli.BoolFlag{Name: "to-immediate", Destination: &o.target.toImmediate, Usage: "recover only until the backup is consistent"},
			&cli.BoolFlag{Name: "target-exclusive", Destination: &o.target.exclusive, Usage: "stop just before the target instead of just after it"},
			&cli.StringFlag{Name: "target-action", Destination: &o.targetAction, Value: "promote",
				Usage: "`ACTION` at the target: promote (the default here: an instant restore comes up writable), pause or shutdown"},
			&cli.StringFlag{Name: "timeline", Destination: &o.target.timeline, Value: "latest", Usage: "timeline to recover along: `latest`, current or an ID"},
			&cli.BoolFlag{Name: "no-recovery-config", Destination: &o.noRecovery, Usage: "instant mode: write no recovery.signal or restore_command"},
			&cli.BoolFlag{Name: "keep-archive-mode", Destination: &o.keepArchive, Usage: "instant mode: keep the backup's archive_mode (by default it is turned off so the copy never archives into the original's archive)"},
			&cli.StringFlag{Name: "cache-size", Destination: &o.cacheSize, Value: "128MiB", Usage: "`SIZE` of the in-memory chunk cache"},
			&cli.StringFlag{Name: "copy-on-read", Destination: &o.copyOnRead, Value: "16GiB",
				Usage: "instant mode: keep up to `SIZE` of what reads fetch from the repository in --scratch, so a re-read is local (0: off; stops early while the scratch file system has less than 10% or 1 GiB free)"},
			&cli.IntFlag{Name: "prefetch", Destination: &o.prefetch, Value: 16, Usage: "`N` chunks read ahead of a sequential reader (0: off)"},
			&cli.IntFlag{Name: "readahead", Destination: &o.readahead, Value: 1024, Usage: "kernel readahead in `KiB` (read_ahead_kb of the mount)"},
			&cli.BoolFlag{Name: "warm", Aliases: []string{"warm-catalogs"}, Destination: &o.warm, Value: true,
				Usage: "instant mode: load in the background, into the chunk cache, what the server's start and first connections read, so they do not wait for the repository file by file: every folder's listing and the small control files from the start, the system catalogs (global/ and each database's but the templates') once recovery starts (each at most a quarter of --cache-size)"},
			&cli.BoolFlag{Name: "hydrate", Destination: &o.hydrate, Usage: "instant mode: copy the whole backup into the overlay in the background, so it converges to local-disk speed"},
			&cli.StringFlag{Name: "hydrate-rate", Destination: &o.hydrateRate, Usage: "cap --hydrate at `RATE` bytes per second (e.g. 50MiB)"},
			&cli.BoolFlag{Name: "passthrough", Destination: &o.passthrough, Value: true, Usage: "serve files held whole in the overlay through kernel FUSE passthrough"},
			&cli.BoolFlag{Name: "debug-fuse", Destination: &o.debug, Usage: "log every FUSE request"},
		},
		Action: func(c *cli.Context) error {
			e, err := newEnv(c)
			if err != nil {
				return err
			}
			if c.NArg() != 1 {
				return usagef("mount takes one MOUNTPOINT (got %d arguments)", c.NArg())
			}
			return runMount(c.Context, e, c.Args().First(), o)
		},
	}
}

// parseByteSize reads "512MiB", "1G", "64k" or a plain number of bytes.
func parseByteSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	mult := int64(1)
	lower := strings.ToLower(t)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"kib", 1 << 10}, {"mib", 1 << 20}, {"gib", 1 << 30}, {"tib", 1 << 40}, {"kb", 1e3}, {"mb", 1e6}, {"gb", 1e9}, {"tb", 1e12},
		{"k", 1 << 10}, {"m", 1 << 20}, {"g", 1 << 30}, {"t", 1 << 40}, {"b", 1}} {
		if strings.HasSuffix(lower, u.suffix) {
			mult, t = u.mult, strings.TrimSpace(t[:len(t)-len(u.suffix)])
			break
		}
	}
	v, err := strconv.ParseFloat(t, 64)
	if err != nil || !(v >= 0) || v*float64(mult) >= math.MaxInt64 { // !(v >= 0) catches NaN; Inf and huge values would wrap
		return 0, fmt.Errorf("size %q: use a number of bytes or e.g. 512MiB, 1GiB", s)
	}
	return int64(v * float64(mult)), nil
}

// openRepoCache opens the repository with a chunk cache of the given size.
// The cache is most of such a process's live memory, and Go's collector
// lets the heap grow to twice what is live: a soft memory limit of the
// cache plus cacheHeadroom keeps the process near its --cache-size
// instead (GOMEMLIMIT, when set, wins).
func (e *env) openRepoCache(ctx context.Context, cacheSize int64) (*repo.Repository, error) {
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(cacheSize + cacheHeadroom)
	}
	return e.openWith(ctx, repo.Options{CacheSize: cacheSize})
}

// cacheHeadroom is the memory a mount or verify needs besides its chunk
// cache: FUSE request buffers, decoders, the index and the tree.
const cacheHeadroom = 128 << 20

type mountReport struct {
	Mountpoint  string              `json:"mountpoint"`
	Mode        string              `json:"mode"` // browse or instant
	Snapshots   int                 `json:"snapshots,omitempty"`
	ID          string              `json:"id,omitempty"`
	Scratch     string              `json:"scratch,omitempty"`
	Reused      bool                `json:"reused_scratch"`
	Owner       string              `json:"owner,omitempty"`
	Plan        *backup.RestorePlan `json:"plan,omitempty"`
	Prepared    *pgfs.PrepareResult `json:"prepared,omitempty"`
	MountSecond float64             `json:"mount_seconds"`
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

func runMount(ctx context.Context, e *env, mountpoint string, o mountOptions) error {
	start := time.Now()
	mnt, err := filepath.Abs(mountpoint)
	if err != nil {
		return err
	}
	cacheSize, err := parseByteSize(o.cacheSize)
	if err != nil {
		return usagef("--cache-size: %v", err)
	}
	copyOnRead, err := parseByteSize(o.copyOnRead)
	if err != nil {
		return usagef("--copy-on-read: %v", err)
	}
	var hydrateRate int64
	if o.hydrateRate != "" {
		if hydrateRate, err = parseByteSize(o.hydrateRate); err != nil {
			return usagef("--hydrate-rate: %v", err)
		}
		if !o.hydrate {
			return usagef("--hydrate-rate needs --hydrate")
		}
	}
	instant := o.backup != ""
	if !instant {
		for flag, set := range map[string]bool{"--scratch": o.scratch != "", "--to/--to-lsn/--to-xid/--to-name": o.target.toTime != "" || o.target.toLSN != "" || o.target.toXID != "" || o.target.toName != "" || o.target.toImmediate, "--hydrate": o.hydrate} {
			if set {
				return usagef("%s needs --backup ID|latest (instant mode)", flag)
			}
		}
	} else if o.scratch == "" {
		return usagef("instant mode needs --scratch DIR for the copy-on-write overlay (a folder on a local disk)")
	}
	// Cheap refusals before the repository is opened.
	if err := pgfs.CheckMountpoint(mnt); err != nil {
		return err
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
			u, err := verify.LookupUser(o.owner)
			owned <- lookup{u, err}
		}()
	}
	r, err := e.openRepoCache(ctx, cacheSize)
	if err != nil {
		return err
	}
	defer r.Close()
	bg, stopBG := context.WithCancel(context.WithoutCancel(ctx))
	defer stopBG()
	var pf *pgfs.Prefetcher
	if o.prefetch > 0 {
		pf = pgfs.NewPrefetcher(bg, r, 8, o.prefetch)
	}
	mopts := pgfs.MountOptions{Debug: o.debug, Logger: e.log, MaxReadAhead: o.readahead << 10}

	if !instant {
		root, err := pgfs.NewBrowseRoot(ctx, r, pgfs.BrowseOptions{Prefetcher: pf, Logger: e.log})
		if err != nil {
			return err
		}
		snaps, _ := r.Snapshots(ctx)
		mopts.ReadOnly, mopts.FsName = true, "pgvault-browse"
		m, err := pgfs.Mount(ctx, mnt, root, mopts)
		if err != nil {
			return err
		}
		rep := mountReport{Mountpoint: mnt, Mode: "browse", Snapshots: len(snaps), MountSecond: time.Since(start).Seconds()}
		if err := e.out.emit(rep, func(w io.Writer) {
			fmt.Fprintf(w, "browsing %d backups at %s (snapshots/, wal/), read-only; Ctrl-C or `pgvault umount %s` unmounts\n", len(snaps), mnt, mnt)
		}); err != nil {
			return err
		}
		return serveUntilDone(ctx, e, m, nil)
	}

	// Instant mode.
	lu := <-owned
	if lu.err != nil {
		return usageError{lu.err}
	}
	owner := lu.u
	o.target.targetAction = ""
	rc, err := recoveryFromFlags(o.target)
	if err != nil {
		return err
	}
	if !rc.Target.IsEnd() {
		a, err := wal.ParseTargetAction(o.targetAction)
		if err != nil {
			return usageError{fmt.Errorf("--target-action: %w", err)}
		}
		rc.Action = a
	}
	if o.noRecovery && !rc.Target.IsEnd() {
		return usagef("--no-recovery-config and a recovery target: the target needs the recovery configuration")
	}
	in, snaps, err := planInput(ctx, r)
	if err != nil {
		return err
	}
	in.Ref, in.Target, in.Timeline, in.FilesOnly = o.backup, rc.Target, rc.Timeline, o.noRecovery
	plan, err := backup.PlanRestore(in)
	if err != nil {
		return err
	}
	s := snaps[plan.Backup.ID]
	var prepare pgfs.PrepareOptions
	prepare.Owner = pgfs.Owner{UID: owner.UID, GID: owner.GID}
	prepare.Note = fmt.Sprintf("pgvault instant mount of backup %s (%s) at %s", s.ShortID(), rc.Target, time.Now().UTC().Format(time.RFC3339))
	if !o.keepArchive {
		prepare.Settings = append(prepare.Settings, wal.Setting{Name: "archive_mode", Value: "off"})
	}
	if !o.noRecovery {
		// WAL comes through the mount itself (pgvault reads the repository
		// as root): PostgreSQL's user needs no access to the repository.
		rc.RestoreCommand = pgfs.WALRestoreCommand(mnt)
		prepare.Recovery = &rc
		if plan.Segments <= shortRecovery {
			prepare.Settings = append(prepare.Settings, wal.Setting{Name: "recovery_prefetch", Value: "off"})
		}
	}
	ov, err := pgfs.OpenOverlay(ctx, r, s, pgfs.OverlayOptions{Scratch: o.scratch, Owner: prepare.Owner, Prefetcher: pf, CopyOnRead: copyOnRead, Logger: e.log})
	if err != nil {
		return err
	}
	// What the server's start reads, loaded from now on: the preparation
	// below and the server's start then find most of it in memory.
	startWarmed := make(chan struct{})
	if o.warm {
		go func() {
			defer close(startWarmed)
			res := ov.WarmStartup(bg, cacheSize/4)
			e.log.Info("folder listings and control files loaded into the chunk cache", "folders", res.Folders, "files", res.Files, "bytes", res.Bytes, "requests", res.Requests, "seconds", res.Duration.Seconds())
		}()
	} else {
		close(startWarmed)
	}
	closeOverlay := func() {
		stopBG()
		<-startWarmed
		ov.Close(ctx)
	}
	rep := mountReport{Mountpoint: mnt, Mode: "instant", ID: s.ID, Scratch: ov.Scratch(), Reused: !ov.Fresh(), Owner: owner.Name, Plan: plan}
	if ov.Fresh() {
		if rep.Prepared, err = ov.Prepare(ctx, prepare); err != nil {
			closeOverlay()
			return err
		}
	}
	instOpts := pgfs.InstantOptions{Passthrough: o.passthrough, ServeWAL: true, SegmentSize: plan.SegmentSize}
	if !o.noRecovery && !rep.Reused {
		// A reused overlay's server resumes from its own checkpoint.
		instOpts.FirstSegment = plan.FirstSegment()
	}
	m, err := pgfs.Mount(ctx, mnt, pgfs.NewInstantRoot(ov, instOpts), mopts)
	if err != nil {
		closeOverlay()
		return err
	}
	rep.MountSecond = time.Since(start).Seconds()
	if err := e.out.emit(rep, func(w io.Writer) {
		printPlan(w, plan)
		if rep.Reused {
			fmt.Fprintf(w, "reusing the overlay in %s (its recovery configuration was written at its first mount)\n", rep.Scratch)
		} else if rep.Prepared != nil {
			for _, st := range rep.Prepared.Settings {
				fmt.Fprintf(w, "  %s\n", st)
			}
			if rep.Prepared.ControlState != "" {
				fmt.Fprintf(w, "  pg_control: %s (nothing in the view needs syncing)\n", rep.Prepared.ControlState)
			}
		}
		fmt.Fprintf(w, "backup %s mounted at %s in %.2fs, writes go to %s; start it: pg_ctl -D %s start (as %s)\n",
			s.ShortID(), mnt, rep.MountSecond, rep.Scratch, mnt, owner.Name)
	}); err != nil {
		return err
	}
	warmed := make(chan struct{})
	if o.warm {
		go func() {
			defer close(warmed)
			if !o.noRecovery && !rep.Reused {
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
			res := ov.WarmCatalogs(bg, cacheSize/4)
			e.log.Info("system catalogs loaded into the chunk cache", "files", res.Files, "bytes", res.Bytes, "requests", res.Requests, "seconds", res.Duration.Seconds())
		}()
	} else {
		close(warmed)
	}
	hydrated := make(chan struct{})
	if o.hydrate {
		go func() {
			defer close(hydrated)
			res, err := ov.Hydrate(bg, pgfs.HydrateOptions{Rate: hydrateRate})
			switch {
			case err != nil && !errors.Is(err, context.Canceled):
				e.log.Error("hydration stopped", "err", err)
			case err == nil:
				e.log.Info("hydration done: the overlay holds the whole backup", "files", res.Files, "bytes", res.Bytes, "seconds", res.Duration.Seconds())
			}
		}()
	} else {
		close(hydrated)
	}
	err = serveUntilDone(ctx, e, m, func() {
		stopBG()
		<-hydrated
		<-warmed
		<-startWarmed
	})
	if cerr := ov.Close(context.WithoutCancel(ctx)); cerr != nil && err == nil {
		err = cerr
	}
	st := ov.Stats()
	e.log.Info("unmounted", "mountpoint", mnt, "base_bytes_read", st.BaseBytesRead, "copied_on_read", st.CopiedOnRead, "bytes_written", st.BytesWritten, "read_errors", st.ReadErrors)
	return err
}

// serveUntilDone waits until the mount goes away (pgvault umount) or ctx
// ends (SIGINT, SIGTERM); then it unmounts, retrying while the mountpoint
// is busy. A second signal detaches the mount (umount -l) instead.
func serveUntilDone(ctx context.Context, e *env, m *pgfs.Mounted, beforeUnmount func()) error {
	select {
	case <-m.Done():
		if beforeUnmount != nil {
			beforeUnmount()
		}
		return nil
	case <-ctx.Done():
	}
	if beforeUnmount != nil {
		beforeUnmount()
	}
	again := make(chan os.Signal, 1)
	signal.Notify(again, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(again)
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
		if !told {
			fmt.Fprintf(e.stderr, "pgvault: %s is busy (is PostgreSQL still running on it? stop it: pg_ctl -D %s stop); still serving, retrying; signal again to detach it\n", m.Dir(), m.Dir())
			told = true
		}
		select {
		case <-again:
			if _, err := pgfs.Unmount(context.Background(), m.Dir(), true); err != nil {
				return err
			}
			fmt.Fprintf(e.stderr, "pgvault: detached %s (umount -l); processes using it get errors now\n", m.Dir())
			return nil
		case <-m.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
}
