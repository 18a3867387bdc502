package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/pgvault/pgvault/internal/pg/wal"
	"github.com/pgvault/pgvault/internal/service"
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
			&cli.StringFlag{Name: "to", Destination: &o.target.toTime, Usage: "recover to `TIME` (RFC 3339, \"2026-01-02 15:04:05.123456+00\", \"5 minutes ago\", \"yesterday 14:00\")"},
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
				Usage: "instant mode: keep up to `SIZE` of what reads fetch from the repository in --scratch, so a re-read is local; a read that goes to the repository also fetches the 4 MiB of the file around it in the background (0: off; stops early while the scratch file system has less than 10% or 1 GiB free)"},
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

func runMount(ctx context.Context, e *env, mountpoint string, o mountOptions) error {
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
	mo := service.MountOptions{
		Mountpoint: mnt, Backup: o.backup, NoRecovery: o.noRecovery, KeepArchiveMode: o.keepArchive, Scratch: o.scratch,
		Owner: o.owner, CacheSize: cacheSize, CopyOnRead: copyOnRead, Hydrate: o.hydrate, HydrateRate: hydrateRate,
		Warm: o.warm, Passthrough: o.passthrough, Prefetch: o.prefetch, Readahead: o.readahead, Debug: o.debug,
	}
	if o.backup == "" {
		for flag, set := range map[string]bool{"--scratch": o.scratch != "", "--to/--to-lsn/--to-xid/--to-name": o.target.toTime != "" || o.target.toLSN != "" || o.target.toXID != "" || o.target.toName != "" || o.target.toImmediate, "--hydrate": o.hydrate} {
			if set {
				return usagef("%s needs --backup ID|latest (instant mode)", flag)
			}
		}
	} else {
		if o.scratch == "" {
			return usagef("instant mode needs --scratch DIR for the copy-on-write overlay (a folder on a local disk)")
		}
		o.target.targetAction = ""
		if mo.Recovery, err = recoveryFromFlags(o.target); err != nil {
			return err
		}
		if !mo.Recovery.Target.IsEnd() {
			a, err := wal.ParseTargetAction(o.targetAction)
			if err != nil {
				return usageError{fmt.Errorf("--target-action: %w", err)}
			}
			mo.Recovery.Action = a
		}
		if o.noRecovery && !mo.Recovery.Target.IsEnd() {
			return usagef("--no-recovery-config and a recovery target: the target needs the recovery configuration")
		}
	}
	site, err := e.site(askPassword)
	if err != nil {
		return err
	}
	m, err := site.Mount(ctx, mo)
	if err != nil {
		return err
	}
	rep := m.Report
	if err := e.out.emit(rep, func(w io.Writer) {
		if rep.Mode == "browse" {
			fmt.Fprintf(w, "browsing %d backups at %s (snapshots/, wal/), read-only; Ctrl-C or `pgvault umount %s` unmounts\n", rep.Snapshots, mnt, mnt)
			return
		}
		printPlan(w, rep.Plan)
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
			service.ShortID(rep.ID), mnt, rep.MountSecond, rep.Scratch, mnt, rep.Owner)
	}); err != nil {
		// Nobody learns where it is mounted: do not leave it mounted.
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		m.Serve(cctx, service.ServeOptions{})
		return err
	}
	// A second signal while the mountpoint is busy detaches it.
	again := make(chan os.Signal, 1)
	signal.Notify(again, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(again)
	return m.Serve(ctx, service.ServeOptions{
		Detach: again,
		Busy: func(dir string) {
			fmt.Fprintf(e.stderr, "pgvault: %s is busy (is PostgreSQL still running on it? stop it: pg_ctl -D %s stop); still serving, retrying; signal again to detach it\n", dir, dir)
		},
		Detached: func(dir string) {
			fmt.Fprintf(e.stderr, "pgvault: detached %s (umount -l); processes using it get errors now\n", dir)
		},
	})
}
