//go:build bench

package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pglogrepl"
)

// walIngest measures the highest WAL rate each receiver stores: both
// slots are created (reserving WAL) before pgbench-like UPDATEs write a
// backlog of cfg.ingestMB, then each receiver is started on its own slot
// and timed until it has stored the whole backlog. A receiver catching up
// reads as fast as the server can send, so the time is its ceiling, and
// no load generator shares the two cores with it. pg_receivewal writing
// plain segments to local disk (fsync per segment, as it does by default)
// is the replication protocol's own ceiling here; pgvault wal stream
// compresses, encrypts and stores into a folder repository.
func (b *bench) walIngest(round int) {
	b.setArchive("/bin/true")
	slots := map[string]string{ToolPgvault: "pgvault_ingest", ToolReceivewal: "receivewal_ingest"}
	dropSlots := func() {
		for _, s := range slots {
			waitUntil(nil, 100*time.Millisecond, 10*time.Second, func() bool {
				v, _ := sqlString(b.c.Port(), "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1 AND active", s)
				return v == "0"
			})
			sqlExec(b.c.Port(), time.Minute, "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = '"+s+"'")
		}
	}
	dropSlots()
	defer dropSlots()
	for _, s := range slots {
		if err := sqlExec(b.c.Port(), time.Minute, "SELECT pg_create_physical_replication_slot('"+s+"', true)"); err != nil {
			b.t.Fatalf("WAL ingest: create slot %s: %v", s, err)
		}
	}
	startLSN, err := sqlString(b.c.Port(), "SELECT restart_lsn::text FROM pg_replication_slots WHERE slot_name = $1", slots[ToolPgvault])
	if err != nil {
		b.t.Fatal(err)
	}
	// The same WAL as the push benchmark's: UPDATEs of 20,000 accounts at
	// a time, a CHECKPOINT every 10 (full-page images).
	rows, win := b.cfg.scale*100000, 20000
	deadline := time.Now().Add(20 * time.Minute)
	for i := 0; ; i++ {
		behind, err := sqlString(b.c.Port(), "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::pg_lsn)::bigint", startLSN)
		if err != nil {
			b.t.Fatal(err)
		}
		if n, _ := strconv.ParseInt(behind, 10, 64); n >= int64(b.cfg.ingestMB)<<20 {
			break
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("WAL ingest: the backlog is only %s bytes after 20 minutes", behind)
		}
		lo := (round*7919*win+i*win)%rows + 1
		if err := sqlExec(b.c.Port(), 5*time.Minute, fmt.Sprintf("UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid BETWEEN %d AND %d", lo, lo+win-1)); err != nil {
			b.t.Fatalf("WAL ingest backlog: %v", err)
		}
		if i%10 == 9 {
			sqlExec(b.c.Port(), 5*time.Minute, "CHECKPOINT")
		}
	}
	switched, err := sqlString(b.c.Port(), "SELECT pg_switch_wal()::text")
	if err != nil {
		b.t.Fatal(err)
	}
	segSizeS, _ := sqlString(b.c.Port(), "SELECT setting FROM pg_settings WHERE name = 'wal_segment_size'")
	segSize, _ := strconv.ParseUint(segSizeS, 10, 64)
	last, _ := pglogrepl.ParseLSN(switched)
	start, _ := pglogrepl.ParseLSN(startLSN)
	if segSize == 0 || last == 0 || start == 0 {
		b.t.Fatalf("WAL ingest: segment size %q, backlog %s..%s", segSizeS, startLSN, switched)
	}
	// The backlog is every segment up to the one the switch completed.
	first := uint64(start) / segSize * segSize
	end := (uint64(last)-1)/segSize*segSize + segSize
	lastSeg, err := sqlString(b.c.Port(), "SELECT pg_walfile_name($1::pg_lsn - 1)", switched)
	if err != nil {
		b.t.Fatal(err)
	}
	mb := float64(end-first) / 1e6
	b.logf("WAL ingest round %d: backlog of %.0f MB (%s to %s)", round, mb, pglogrepl.LSN(first), pglogrepl.LSN(end))

	for _, tool := range rotate([]string{ToolPgvault, ToolReceivewal}, round) {
		var u usage
		var err error
		if tool == ToolPgvault {
			u, err = b.ingestPgvault(round, slots[tool], lastSeg)
		} else {
			u, err = b.ingestReceivewal(round, slots[tool], lastSeg)
		}
		if err != nil {
			b.fail(StepWALIngest, tool, err)
			continue
		}
		b.res.Add(StepWALIngest, tool, sampleOf(u, NaN(), mb))
		b.logf("WAL ingest %s: %.0f MB in %.2fs = %.0f MB/s, peak RSS %.0f MB", tool, mb, u.Wall.Seconds(), mb/u.Wall.Seconds(), u.MaxRSSMB)
	}
}

// ingestPgvault runs wal stream on slot until the repository holds
// segment lastSeg.
func (b *bench) ingestPgvault(round int, slot, lastSeg string) (usage, error) {
	pv := b.newPgvaultRepo(fmt.Sprintf("pgvault-ingest-r%d", round))
	defer os.RemoveAll(pv.dir)
	cmd := pgCmd(context.Background(), pgvaultBin, "wal", "stream", "--pg", b.c.ReplicationConnString(), "--slot", slot)
	cmd.Env = append(cmd.Env, pv.env...)
	b.record("pgvault: wal stream (as postgres) catching up a WAL backlog on its slot", cmd)
	return b.runUntilStored(cmd, filepath.Join(pv.repo, "wal", lastSeg[:8], lastSeg))
}

// ingestReceivewal runs pg_receivewal on slot, into a fresh folder, until
// segment lastSeg is complete there.
func (b *bench) ingestReceivewal(round int, slot, lastSeg string) (usage, error) {
	dir := filepath.Join(b.work, fmt.Sprintf("receivewal-r%d", round))
	os.RemoveAll(dir)
	if err := os.Mkdir(dir, 0o700); err != nil {
		return usage{}, err
	}
	defer os.RemoveAll(dir)
	ownByPostgres(b.t, dir)
	cmd := pgCmd(context.Background(), "pg_receivewal", "-h", "127.0.0.1", "-p", strconv.Itoa(b.c.Port()), "-U", "postgres",
		"-D", dir, "--slot", slot, "--no-loop")
	b.record("pg_receivewal: catch up the same backlog on its slot (as postgres)", cmd)
	return b.runUntilStored(cmd, filepath.Join(dir, lastSeg))
}

// runUntilStored starts a receiver and stops it once the file stored
// exists (a complete segment: pg_receivewal renames it from .partial after
// its fsync, pgvault writes the catalogue entry after the data is
// durable). The usage's wall time ends there, not at the exit: neither
// receiver stops by itself (pg_receivewal's --endpos waits for the
// server's next message past the position, up to a keepalive later).
func (b *bench) runUntilStored(cmd *exec.Cmd, stored string) (usage, error) {
	p, err := b.startBG(cmd)
	if err != nil {
		return usage{}, err
	}
	err = waitUntil(p, 20*time.Millisecond, 30*time.Minute, func() bool {
		_, err := os.Stat(stored)
		return err == nil
	})
	wall := time.Since(p.start)
	rss := peakRSSMB(p.cmd.Process.Pid)
	u := p.stop(syscall.SIGTERM, 30*time.Second)
	if err != nil {
		return u, fmt.Errorf("%s did not store %s: %w", filepath.Base(cmd.Path), filepath.Base(stored), err)
	}
	u.Wall = wall
	u.MaxRSSMB = max(u.MaxRSSMB, rss)
	return u, nil
}

// peakRSSMB is VmHWM of process pid, the process's peak resident set so
// far, in MB; 0 when it cannot be read.
func peakRSSMB(pid int) float64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	var kb float64
	for _, line := range strings.Split(string(data), "\n") {
		if _, err := fmt.Sscanf(line, "VmHWM: %f kB", &kb); err == nil {
			return kb * 1024 / 1e6
		}
	}
	return 0
}
