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
	"time"

	"github.com/pgvault/pgvault/integration/pgtest"
)

// The peers the benchmark measures pgvault against: how each is set up,
// backs up, restores and mounts.

// ================= pg_basebackup =================

func (b *bench) basebackup() {
	b.prepare("/bin/true")
	out := b.rootDir("basebackup")
	defer os.RemoveAll(out)
	target := filepath.Join(out, "b")
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	cmd := rootCmd(ctx, filepath.Join(pgtest.BinDir, "pg_basebackup"), "-h", "127.0.0.1", "-p", strconv.Itoa(b.c.Port()), "-U", "postgres",
		"-D", target, "-Ft", "-X", "none", "--compress=server-zstd", "--checkpoint=fast")
	b.record("pg_basebackup (archive_command = /bin/true)", cmd)
	s0 := serverCPU(b.c.DataDir())
	u, err := measure(cmd)
	s1 := serverCPU(b.c.DataDir())
	if err != nil {
		b.fail(StepFull, ToolBasebackup, err)
		return
	}
	mb := treeMB(target)
	b.res.Add(StepFull, ToolBasebackup, sampleOf(u, s1-s0, mb))
	b.logf("pg_basebackup: %.2fs, %.1f MB", u.Wall.Seconds(), mb)
}

// ================= pgBackRest =================

type pgbackrest struct {
	dir, conf, repo string
	why             string // set when the setup failed
}

func (pb *pgbackrest) archiveCmd() string {
	return "pgbackrest --config=" + pb.conf + " --stanza=bench archive-push %p"
}

func (b *bench) setupPgbackrest() *pgbackrest {
	dir := filepath.Join(b.work, "pgbackrest")
	pb := &pgbackrest{dir: dir, conf: filepath.Join(dir, "pgbackrest.conf"), repo: filepath.Join(dir, "repo")}
	for _, d := range []string{dir, pb.repo, filepath.Join(dir, "log"), filepath.Join(dir, "lock"), filepath.Join(dir, "spool")} {
		os.MkdirAll(d, 0o750)
	}
	conf := fmt.Sprintf(`[global]
repo1-path=%s
repo1-retention-full=9999
log-path=%s
lock-path=%s
spool-path=%s
log-level-console=warn
log-level-file=off
compress-type=zst
process-max=2
start-fast=y

[bench]
pg1-path=%s
pg1-port=%d
pg1-socket-path=%s
pg1-user=postgres
`, pb.repo, filepath.Join(dir, "log"), filepath.Join(dir, "lock"), filepath.Join(dir, "spool"), b.c.DataDir(), b.c.Port(), b.c.SocketDir())
	if err := os.WriteFile(pb.conf, []byte(conf), 0o640); err != nil {
		b.t.Fatal(err)
	}
	ownByPostgres(b.t, dir)
	b.configs = append(b.configs, "", "# pgbackrest.conf ("+b.generalize(pb.conf)+")", strings.TrimSpace(b.generalize(conf)))
	b.setArchive(pb.archiveCmd())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := pgCmd(ctx, "/usr/bin/pgbackrest", "--config="+pb.conf, "--stanza=bench", "stanza-create")
	b.record("pgBackRest: create the stanza (as postgres)", cmd)
	if _, err := measure(cmd); err != nil {
		pb.why = "stanza-create failed: " + oneLine(err)
		b.note("pgBackRest not measured: %s", pb.why)
		return pb
	}
	cmd = pgCmd(ctx, "/usr/bin/pgbackrest", "--config="+pb.conf, "--stanza=bench", "check")
	b.record("pgBackRest: check archiving (as postgres)", cmd)
	if _, err := measure(cmd); err != nil {
		pb.why = "pgbackrest check failed: " + oneLine(err)
		b.note("pgBackRest not measured: %s", pb.why)
	}
	return pb
}

var pgbrLabel = regexp.MustCompile(`^\d{8}-\d{6}F(_\d{8}-\d{6}[ID])?$`)

func (pb *pgbackrest) labels() map[string]bool {
	out := map[string]bool{}
	ents, _ := os.ReadDir(filepath.Join(pb.repo, "backup", "bench"))
	for _, e := range ents {
		if e.IsDir() && pgbrLabel.MatchString(e.Name()) {
			out[e.Name()] = true
		}
	}
	return out
}

func (b *bench) pgbackrestBackup(step, typ string) {
	pb := b.pgbr
	if pb.why != "" {
		b.res.Fail(step, ToolPgbackrest, pb.why)
		return
	}
	b.prepare(pb.archiveCmd())
	before := pb.labels()
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	cmd := pgCmd(ctx, "/usr/bin/pgbackrest", "--config="+pb.conf, "--stanza=bench", "--type="+typ, "backup")
	b.record("pgBackRest: "+typ+" backup (as postgres; archive_command = pgbackrest archive-push %p)", cmd)
	s0 := serverCPU(b.c.DataDir())
	u, err := measure(cmd)
	s1 := serverCPU(b.c.DataDir())
	if err != nil {
		b.fail(step, ToolPgbackrest, err)
		return
	}
	var mb float64
	for l := range pb.labels() {
		if !before[l] {
			mb += treeMB(filepath.Join(pb.repo, "backup", "bench", l))
		}
	}
	b.res.Add(step, ToolPgbackrest, sampleOf(u, s1-s0, mb))
	b.logf("pgbackrest %s: %.2fs, %.1f MB", step, u.Wall.Seconds(), mb)
}

func (b *bench) pgbackrestRestore() {
	pb := b.pgbr
	if pb.why != "" {
		b.res.Fail(StepRestore, ToolPgbackrest, pb.why)
		return
	}
	target := b.emptyDataDir()
	defer os.RemoveAll(target)
	dropCaches()
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	cmd := b.pgbackrestRestoreCmd(ctx, target)
	b.record("pgBackRest: restore (as postgres)", cmd)
	u, err := measure(cmd)
	if err != nil {
		b.fail(StepRestore, ToolPgbackrest, err)
		return
	}
	mb := treeMB(target)
	b.res.Add(StepRestore, ToolPgbackrest, sampleOf(u, NaN(), mb))
	b.startRestored(ToolPgbackrest, target, u.Wall)
	b.logf("pgbackrest restore: %.2fs, %.0f MB", u.Wall.Seconds(), mb)
}

// emptyDataDir makes a new, empty data directory owned by postgres.
func (b *bench) emptyDataDir() string {
	target := filepath.Join(b.pgDir(), "data")
	os.Mkdir(target, 0o700)
	ownByPostgres(b.t, target)
	return target
}

// pgbackrestRestoreCmd restores the bench stanza's newest backup into
// target, to recover to consistency and promote.
func (b *bench) pgbackrestRestoreCmd(ctx context.Context, target string) *exec.Cmd {
	return pgCmd(ctx, "/usr/bin/pgbackrest", "--config="+b.pgbr.conf, "--stanza=bench", "--pg1-path="+target,
		"--type=immediate", "--target-action=promote", "restore")
}

// ================= restic =================

type resticRepo struct {
	dir, repo string
	env       []string
}

func (b *bench) newResticRepo() *resticRepo {
	dir := b.rootDir("restic")
	rs := &resticRepo{dir: dir, repo: filepath.Join(dir, "repo")}
	rs.env = []string{"RESTIC_REPOSITORY=" + rs.repo, "RESTIC_PASSWORD=bench secret", "RESTIC_CACHE_DIR=" + filepath.Join(dir, "cache")}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := rootCmd(ctx, resticBin(), "init")
	cmd.Env = append(cmd.Env, rs.env...)
	b.record("restic: create the repository (as root)", cmd)
	if _, err := measure(cmd); err != nil {
		b.t.Fatalf("restic init: %v", err)
	}
	return rs
}

func (b *bench) resticBackup(rs *resticRepo, step string) {
	b.prepare("/bin/true")
	data := b.c.DataDir()
	before := treeMB(rs.repo)
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	cmd := rootCmd(ctx, resticBin(), "backup", "--host", "bench", "--exclude", data+"/postmaster.pid", "--exclude", data+"/postmaster.opts", data)
	cmd.Env = append(cmd.Env, rs.env...)
	b.record("restic: backup of the checkpointed data directory (as root)", cmd)
	s0 := serverCPU(data)
	u, err := measure(cmd)
	s1 := serverCPU(data)
	if err != nil {
		b.fail(step, ToolRestic, err)
		return
	}
	mb := treeMB(rs.repo) - before
	b.res.Add(step, ToolRestic, sampleOf(u, s1-s0, mb))
	b.logf("restic %s: %.2fs, %.1f MB", step, u.Wall.Seconds(), mb)
}

func (b *bench) resticRestore(rs *resticRepo) {
	target := b.pgDir()
	defer func() {
		ents, _ := os.ReadDir(target)
		for _, e := range ents {
			os.RemoveAll(filepath.Join(target, e.Name()))
		}
	}()
	dropCaches()
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	cmd := rootCmd(ctx, resticBin(), "restore", "latest", "--target", target)
	cmd.Env = append(cmd.Env, rs.env...)
	b.record("restic: restore (as root)", cmd)
	u, err := measure(cmd)
	if err != nil {
		b.fail(StepRestore, ToolRestic, err)
		return
	}
	data := filepath.Join(target, b.c.DataDir())
	mb := treeMB(data)
	b.res.Add(StepRestore, ToolRestic, sampleOf(u, NaN(), mb))
	b.startRestored(ToolRestic, data, u.Wall)
	b.logf("restic restore: %.2fs, %.0f MB", u.Wall.Seconds(), mb)
}

func (b *bench) resticMount(rs *resticRepo) {
	mnt := b.rootDir("restic-mnt")
	dropCaches()
	cmd := rootCmd(context.Background(), resticBin(), "mount", mnt)
	cmd.Env = append(cmd.Env, rs.env...)
	b.record("restic: mount (as root), then read every file of snapshots/latest", cmd)
	b.mountRead(ToolRestic, cmd, mnt, b.c.DataDir(), nil)
}

// ================= barman =================

type barman struct {
	conf, home, incoming string
	why                  string
}

func (bm *barman) archiveCmd() string {
	return fmt.Sprintf("test ! -f %s/%%f && cp %%p %s/%%f", bm.incoming, bm.incoming)
}

func (b *bench) setupBarman() *barman {
	home := filepath.Join(b.work, "barman")
	bm := &barman{home: home, conf: filepath.Join(home, "barman.conf"), incoming: filepath.Join(home, "bench", "incoming")}
	os.MkdirAll(bm.incoming, 0o755)
	os.Chmod(home, 0o755)
	os.Chmod(filepath.Dir(bm.incoming), 0o755)
	ownByPostgres(b.t, bm.incoming)
	conf := fmt.Sprintf(`[barman]
barman_user = root
barman_home = %s
log_file = %s/barman.log
log_level = INFO

[bench]
description = "pgvault peer benchmark"
conninfo = host=127.0.0.1 port=%d user=postgres dbname=postgres
streaming_conninfo = host=127.0.0.1 port=%d user=postgres
backup_method = postgres
archiver = on
streaming_archiver = off
backup_compression = zstd
backup_compression_location = server
backup_compression_format = tar
immediate_checkpoint = true
path_prefix = %s
`, home, home, b.c.Port(), b.c.Port(), pgtest.BinDir)
	if err := os.WriteFile(bm.conf, []byte(conf), 0o644); err != nil {
		b.t.Fatal(err)
	}
	b.configs = append(b.configs, "", "# barman.conf ("+b.generalize(bm.conf)+"; barman runs as root)", strings.TrimSpace(b.generalize(conf)))

	// barman check wants one WAL file archived.
	b.setArchive(bm.archiveCmd())
	sqlExec(b.c.Port(), time.Minute, "SELECT pg_switch_wal()")
	sqlExec(b.c.Port(), time.Minute, "CHECKPOINT")
	sqlExec(b.c.Port(), time.Minute, "SELECT pg_switch_wal()")
	waitArchiveIdle(b.c.DataDir(), time.Minute)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	// archive-wal, not cron: cron starts archive-wal in the background and
	// returns, so the check right after it could run before the WAL was
	// moved and fail ("WAL archive: FAILED"), as it did in one run.
	archive := rootCmd(ctx, "barman", "-c", bm.conf, "archive-wal", "bench")
	b.record("barman: move archived WAL into the catalogue (as root; also after every backup)", archive)
	if _, err := measure(archive); err != nil {
		b.note("barman archive-wal: %v", oneLine(err))
	}
	check := rootCmd(ctx, "barman", "-c", bm.conf, "check", "bench")
	b.record("barman: check (as root)", check)
	if u, err := measure(check); err != nil {
		var failed []string
		for _, line := range strings.Split(u.Stdout+u.Stderr, "\n") {
			if strings.Contains(line, "FAILED") || strings.Contains(line, "ERROR") {
				failed = append(failed, strings.TrimSpace(line))
			}
		}
		bm.why = "`barman check bench` failed: " + strings.Join(failed, "; ")
		if len(failed) == 0 {
			bm.why = "`barman check bench` failed: " + oneLine(err)
		}
		b.note("barman not measured: %s", bm.why)
	}
	b.setArchive("/bin/true")
	return bm
}

func (bm *barman) backups() map[string]bool {
	out := map[string]bool{}
	ents, _ := os.ReadDir(filepath.Join(bm.home, "bench", "base"))
	for _, e := range ents {
		if e.IsDir() {
			out[e.Name()] = true
		}
	}
	return out
}

func (b *bench) barmanBackup() {
	bm := b.barman
	if bm == nil {
		return
	}
	if bm.why != "" {
		b.res.Fail(StepFull, ToolBarman, bm.why)
		return
	}
	b.prepare(bm.archiveCmd())
	before := bm.backups()
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	cmd := rootCmd(ctx, "barman", "-c", bm.conf, "backup", "bench")
	b.record("barman: backup (as root; postgres method, server-side zstd; archive_command copies into barman's incoming folder)", cmd)
	s0 := serverCPU(b.c.DataDir())
	u, err := measure(cmd)
	s1 := serverCPU(b.c.DataDir())
	if err != nil {
		b.fail(StepFull, ToolBarman, err)
		return
	}
	var mb float64
	var ids []string
	for id := range bm.backups() {
		if !before[id] {
			mb += treeMB(filepath.Join(bm.home, "bench", "base", id))
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	b.res.Add(StepFull, ToolBarman, sampleOf(u, s1-s0, mb))
	b.logf("barman backup %v: %.2fs, %.1f MB", ids, u.Wall.Seconds(), mb)
	rootCmd(ctx, "barman", "-c", bm.conf, "archive-wal", "bench").Run()
}
