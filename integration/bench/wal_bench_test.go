//go:build bench

package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

var segmentName = regexp.MustCompile(`^[0-9A-F]{24}$`)

// walPush archives the same real WAL segments (written by pgbench) one by
// one with `pgvault wal push` and `pgbackrest archive-push`, alternating
// which goes first.
func (b *bench) walPush() {
	n := b.cfg.walSegments
	b.logf("WAL: %d segments, pushed one by one", n)
	copyDir := filepath.Join(b.work, "walcopy")
	os.Mkdir(copyDir, 0o700)
	ownByPostgres(b.t, copyDir)
	b.setArchive("cp %p " + copyDir + "/%f")
	count := func() []string {
		ents, _ := os.ReadDir(copyDir)
		var segs []string
		for _, e := range ents {
			if segmentName.MatchString(e.Name()) {
				segs = append(segs, e.Name())
			}
		}
		sort.Strings(segs)
		return segs
	}
	// Real table WAL, quickly: UPDATEs of 20,000 pgbench_accounts rows
	// at a time, with a CHECKPOINT every 10 (so the WAL carries full-page
	// images, as it does after every checkpoint in production).
	rows, win := b.cfg.scale*100000, 20000
	deadline := time.Now().Add(10 * time.Minute)
	for i := 0; len(count()) < n+1 && time.Now().Before(deadline); i++ {
		lo := (i*win)%rows + 1
		if err := sqlExec(b.c.Port(), 5*time.Minute, fmt.Sprintf("UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid BETWEEN %d AND %d", lo, lo+win-1)); err != nil {
			b.t.Fatalf("WAL for the push benchmark: %v", err)
		}
		if i%10 == 9 {
			sqlExec(b.c.Port(), 5*time.Minute, "CHECKPOINT")
		}
		if i%5 == 4 {
			waitArchiveIdle(b.c.DataDir(), time.Minute)
		}
	}
	sqlExec(b.c.Port(), time.Minute, "SELECT pg_switch_wal()")
	b.setArchive("/bin/true")
	segs := count()
	if len(segs) > n {
		segs = segs[:n]
	}
	if len(segs) == 0 {
		b.res.Fail(StepWALPush, ToolPgvault, "pgbench wrote no WAL segment in 10 minutes")
		return
	}
	pv := b.newPgvaultRepo("pgvault-wal")
	defer os.RemoveAll(pv.dir)
	for i, seg := range segs {
		path := filepath.Join(copyDir, seg)
		for _, tool := range rotate([]string{ToolPgvault, ToolPgbackrest}, i) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			var u usage
			var err error
			switch tool {
			case ToolPgvault:
				prof := b.profFile(StepWALPush, i)
				cmd := pgCmd(ctx, pgvaultBin, "wal", "push", path)
				cmd.Env = append(cmd.Env, append(pv.env, "PGVAULT_CPUPROFILE="+prof)...)
				b.record("pgvault: wal push of one segment (as postgres, as archive_command runs it)", cmd)
				u, err = measure(cmd)
				if err == nil {
					b.profiles[StepWALPush], b.lastUsage[StepWALPush] = prof, u
				}
			case ToolPgbackrest:
				if b.pgbr.why != "" {
					err = fmt.Errorf("%s", b.pgbr.why)
					break
				}
				cmd := pgCmd(ctx, "/usr/bin/pgbackrest", "--config="+b.pgbr.conf, "--stanza=bench", "archive-push", path)
				b.record("pgBackRest: archive-push of one segment (as postgres)", cmd)
				u, err = measure(cmd)
			}
			cancel()
			if err != nil {
				b.fail(StepWALPush, tool, err)
				continue
			}
			b.res.Add(StepWALPush, tool, sampleOf(u, NaN(), 16.777216))
		}
	}
	os.RemoveAll(copyDir)
	for _, tool := range []string{ToolPgvault, ToolPgbackrest} {
		st := b.res.Get(StepWALPush, tool).Stat(Wall)
		b.logf("WAL push %s: median %.3fs per segment", tool, st.Median)
	}
	b.walFetch(pv, segs)
}

// walFetch fetches the pushed segments one after another, as recovery's
// restore_command does, with pgvault's prefetching spool, without it, and
// with pgbackrest archive-get; each run starts with an empty cache. The
// figure is the run's wall time divided by the number of segments.
func (b *bench) walFetch(pv *pgvaultRepo, segs []string) {
	dest := filepath.Join(b.work, "walfetch")
	for round := range b.cfg.count {
		for _, tool := range rotate([]string{ToolPgvault, ToolPgvaultNoPrefetch, ToolPgbackrest}, round) {
			if tool == ToolPgbackrest && b.pgbr.why != "" {
				b.fail(StepWALFetch, tool, fmt.Errorf("%s", b.pgbr.why))
				continue
			}
			os.RemoveAll(dest)
			os.Mkdir(dest, 0o700)
			ownByPostgres(b.t, dest)
			cache := filepath.Join(dest, "cache")
			var total usage
			var err error
			for _, seg := range segs {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
				var cmd = pgCmd(ctx, "/usr/bin/pgbackrest", "--config="+b.pgbr.conf, "--stanza=bench", "archive-get", seg, filepath.Join(dest, seg))
				if tool != ToolPgbackrest {
					prefetch := "8"
					if tool == ToolPgvaultNoPrefetch {
						prefetch = "0"
					}
					cmd = pgCmd(ctx, pgvaultBin, "wal", "fetch", "--prefetch", prefetch, seg, filepath.Join(dest, seg))
					cmd.Env = append(cmd.Env, "PGVAULT_REPO="+pv.repo, "PGVAULT_PASSWORD_FILE="+pv.pw, "PGVAULT_CACHE_DIR="+cache)
				}
				if round == 0 && seg == segs[0] {
					b.record(tool+": fetch one segment (as postgres, as restore_command runs it)", cmd)
				}
				var u usage
				u, err = measure(cmd)
				cancel()
				if err != nil {
					break
				}
				total.Wall += u.Wall
				total.User += u.User
				total.Sys += u.Sys
				total.MaxRSSMB = max(total.MaxRSSMB, u.MaxRSSMB)
			}
			if err != nil {
				b.fail(StepWALFetch, tool, err)
				continue
			}
			// The prefetcher stays up to its idle time after the last
			// fetch: the next run must not share the CPU with it.
			if tool == ToolPgvault {
				b.waitPrefetcherGone(30 * time.Second)
			}
			n := time.Duration(len(segs))
			total.Wall, total.User, total.Sys = total.Wall/n, total.User/n, total.Sys/n
			b.res.Add(StepWALFetch, tool, sampleOf(total, NaN(), 16.777216))
		}
	}
	os.RemoveAll(dest)
	for _, tool := range []string{ToolPgvault, ToolPgvaultNoPrefetch, ToolPgbackrest} {
		b.logf("WAL fetch %s: median %.3fs per segment", tool, b.res.Get(StepWALFetch, tool).Stat(Wall).Median)
	}
}

var tpsLine = regexp.MustCompile(`tps = ([0-9.]+)`)

// streamLag runs `pgvault wal stream` while pgbench writes, and samples
// how far the slot's restart_lsn trails the server's WAL position.
func (b *bench) streamLag(r int) {
	b.setArchive("/bin/true")
	pv := b.newPgvaultRepo(fmt.Sprintf("pgvault-stream-r%d", r))
	defer os.RemoveAll(pv.dir)
	const slot = "pgvault_bench"
	b.slotStart = ""
	dropSlot := func() {
		sqlExec(b.c.Port(), time.Minute, "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = '"+slot+"'")
	}
	dropSlot()
	// A new physical slot reserves WAL from the last checkpoint's redo
	// point: checkpoint first, so every run starts alike.
	sqlExec(b.c.Port(), 10*time.Minute, "CHECKPOINT")
	// --pg after `stream`: `wal stream` has its own --pg (repeatable, for
	// failover nodes).
	cmd := pgCmd(context.Background(), pgvaultBin, "wal", "stream", "--pg", b.c.ReplicationConnString(), "--slot", slot)
	cmd.Env = append(cmd.Env, pv.env...)
	b.record("pgvault: wal stream (as postgres) during pgbench -c 4 -j 2 -T N", cmd)
	started := time.Now()
	p, err := b.startBG(cmd)
	if err != nil {
		b.fail(StepWALStream, ToolPgvault, err)
		return
	}
	defer func() {
		// The walsender lets go of the slot a moment after the streamer exits.
		waitUntil(nil, 100*time.Millisecond, 5*time.Second, func() bool {
			v, _ := sqlString(b.c.Port(), "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1 AND active", slot)
			return v == "0"
		})
		dropSlot()
	}()
	// Wait for the streamer's first flush report: until then restart_lsn
	// is where the slot was created, whatever the streamer has stored.
	var v string
	err = waitUntil(p, 50*time.Millisecond, time.Minute, func() bool {
		v, _ = sqlString(b.c.Port(), `SELECT coalesce((SELECT (active AND restart_lsn > $2::pg_lsn)::text
			FROM pg_replication_slots WHERE slot_name = $1), 'none')`, slot, b.lsnAtStart(slot))
		return v == "true"
	})
	if err != nil {
		p.stop(syscall.SIGTERM, 10*time.Second)
		b.fail(StepWALStream, ToolPgvault, fmt.Errorf("no flush report from the streamer on slot %s (%s): %w", slot, v, err))
		return
	}
	firstReport := time.Since(started)
	startLSN, err := sqlString(b.c.Port(), "SELECT pg_current_wal_lsn()")
	if err != nil {
		b.t.Fatal(err)
	}

	// Sample every 100 ms on one connection.
	var (
		mu   sync.Mutex
		lags []float64
		stop = make(chan struct{})
		done = make(chan struct{})
		serr error
	)
	go func() {
		defer close(done)
		ctx := context.Background()
		conn, err := sqlConn(ctx, b.c.Port())
		if err != nil {
			serr = err
			return
		}
		defer conn.Close(ctx)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			var lag float64
			qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			err := conn.QueryRow(qctx, "SELECT (pg_current_wal_lsn() - restart_lsn)::float8 FROM pg_replication_slots WHERE slot_name = $1", slot).Scan(&lag)
			cancel()
			if err != nil {
				serr = err
				return
			}
			mu.Lock()
			lags = append(lags, lag)
			mu.Unlock()
		}
	}()
	t0 := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(b.cfg.streamSec+300)*time.Second)
	wait := b.c.PgbenchBackground(ctx, b.t, "-c", "4", "-j", "2", "-T", strconv.Itoa(b.cfg.streamSec))
	out := wait()
	cancel()
	dur := time.Since(t0)
	close(stop)
	<-done
	endLSN, _ := sqlString(b.c.Port(), "SELECT pg_current_wal_lsn()")
	walBytes, _ := sqlString(b.c.Port(), "SELECT pg_wal_lsn_diff($1::pg_lsn, $2::pg_lsn)::bigint", endLSN, startLSN)
	u := p.stop(syscall.SIGTERM, 30*time.Second)
	if serr != nil {
		b.fail(StepWALStream, ToolPgvault, fmt.Errorf("sampling the slot: %w", serr))
		return
	}
	wb, _ := strconv.ParseFloat(walBytes, 64)
	run := StreamRun{FirstReport: firstReport.Seconds(), Seconds: dur.Seconds(), Samples: len(lags), LagP50: Percentile(lags, 50), LagP99: Percentile(lags, 99),
		LagMax: Percentile(lags, 100), WALMBps: wb / 1e6 / dur.Seconds()}
	if m := tpsLine.FindStringSubmatch(out); m != nil {
		run.TPS, _ = strconv.ParseFloat(m[1], 64)
	}
	b.stream = append(b.stream, run)
	b.res.Add(StepWALStream, ToolPgvault, sampleOf(u, NaN(), wb/1e6))
	b.logf("stream: lag p50 %.1f MiB, p99 %.1f MiB, %.1f MB/s of WAL, %.0f TPS (%s)", run.LagP50/(1<<20), run.LagP99/(1<<20), run.WALMBps, run.TPS, strings.TrimSpace(grepLine(out, "tps =")))
}

// lsnAtStart returns the slot's restart_lsn as first seen (its
// reservation), remembered per slot creation.
func (b *bench) lsnAtStart(slot string) string {
	if b.slotStart == "" {
		waitUntil(nil, 50*time.Millisecond, 10*time.Second, func() bool {
			v, err := sqlString(b.c.Port(), "SELECT coalesce((SELECT restart_lsn::text FROM pg_replication_slots WHERE slot_name = $1), '')", slot)
			if err == nil && v != "" {
				b.slotStart = v
			}
			return b.slotStart != ""
		})
		if b.slotStart == "" {
			return "0/0"
		}
	}
	return b.slotStart
}

// waitPrefetcherGone waits until no `pgvault wal prefetch` process runs
// (each ends a few seconds after the last fetch it served), up to
// timeout; it notes a prefetcher still running then.
func (b *bench) waitPrefetcherGone(timeout time.Duration) {
	running := func() bool {
		return exec.Command("pgrep", "-f", pgvaultBin+" wal prefetch").Run() == nil
	}
	if waitUntil(nil, 50*time.Millisecond, timeout, func() bool { return !running() }) != nil {
		b.note("a WAL prefetcher was still running %v after the last fetch", timeout)
	}
}
