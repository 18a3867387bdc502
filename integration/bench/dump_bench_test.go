//go:build bench

package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/pgvault/pgvault/integration/pgtest"
)

// pgvaultDumpTable times `pgvault dump` of DumpTable at the backup's
// consistency point, page cache dropped: from the command's start to its
// exit, the dump file written.
func (b *bench) pgvaultDumpTable(pv *pgvaultRepo, id string) {
	out := filepath.Join(b.rootDir("dump"), "table.sql")
	dropCaches()
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, pgvaultBin, "--output", "json", "dump", "--backup", id, "--table", DumpTable, "--to-immediate",
		"-f", out, "--pg-bin", pgtest.BinDir)
	cmd.Env = append(os.Environ(), pv.rootEnv...)
	b.record("pgvault: one table at a point in time (as root: FUSE; pg_dump against PostgreSQL on a private instant mount, recovered to the backup's consistency point)", cmd)
	u, err := measure(cmd)
	if err != nil {
		b.fail(StepDumpTable, ToolPgvault, err)
		return
	}
	var rep struct {
		Tables []struct {
			Rows *int64 `json:"rows"`
		} `json:"tables"`
		Phases map[string]float64 `json:"phases"`
	}
	if err := json.Unmarshal([]byte(u.Stdout), &rep); err != nil || len(rep.Tables) != 1 || rep.Tables[0].Rows == nil || *rep.Tables[0].Rows != int64(b.cfg.scale) {
		b.fail(StepDumpTable, ToolPgvault, fmt.Errorf("dump report: want %d rows of %s: %v: %s", b.cfg.scale, DumpTable, err, u.Stdout))
		return
	}
	if err := checkDump(out); err != nil {
		b.fail(StepDumpTable, ToolPgvault, err)
		return
	}
	b.res.Add(StepDumpTable, ToolPgvault, sampleOf(u, NaN(), treeMB(out)))
	b.logf("pgvault dump of %s: %.2fs (mount %.2fs, start %.2fs, recovery %.2fs, dump %.2fs, stop %.2fs)", DumpTable, u.Wall.Seconds(),
		rep.Phases["mount"], rep.Phases["start"], rep.Phases["recovery"], rep.Phases["dump"], rep.Phases["stop"])
}

// pgbackrestDumpTable times what a pgBackRest user does for the same
// table: restore the whole backup (--type=immediate), start it, and run
// pg_dump once it answers.
func (b *bench) pgbackrestDumpTable() {
	pb := b.pgbr
	if pb.why != "" {
		b.res.Fail(StepDumpTable, ToolPgbackrest, pb.why)
		return
	}
	target := b.emptyDataDir()
	defer os.RemoveAll(target)
	out := filepath.Join(b.pgDir(), "table.sql")
	dropCaches()
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	start := time.Now()
	restore := b.pgbackrestRestoreCmd(ctx, target)
	b.record("pgBackRest: one table at a point in time: restore (as postgres), start, then pg_dump", restore)
	if _, err := measure(restore); err != nil {
		b.fail(StepDumpTable, ToolPgbackrest, err)
		return
	}
	os.Chmod(target, 0o700)
	srv, _, err := b.startServer(target)
	if err != nil {
		b.fail(StepDumpTable, ToolPgbackrest, err)
		return
	}
	defer srv.stop()
	dump := pgCmd(ctx, filepath.Join(pgtest.BinDir, "pg_dump"), "-h", "127.0.0.1", "-p", strconv.Itoa(srv.port), "-U", "postgres",
		"--table="+DumpTable, "-f", out, "postgres")
	b.recordLine("pg_dump of the restored copy (as postgres)", strings.ReplaceAll(strings.Join(quoteArgs(dump.Args), " "), "-p "+strconv.Itoa(srv.port), "-p $PORT"))
	if _, err := measure(dump); err != nil {
		b.fail(StepDumpTable, ToolPgbackrest, err)
		return
	}
	took := time.Since(start)
	if err := checkDump(out); err != nil {
		b.fail(StepDumpTable, ToolPgbackrest, err)
		return
	}
	s := NewSample()
	s.Wall, s.MB = took.Seconds(), treeMB(out)
	b.res.Add(StepDumpTable, ToolPgbackrest, s)
	b.logf("pgbackrest restore + start + pg_dump of %s: %.2fs", DumpTable, took.Seconds())
}

// checkDump checks that a plain dump holds the table's data.
func checkDump(file string) error {
	data, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	if !strings.Contains(string(data), "COPY public."+DumpTable) {
		return fmt.Errorf("%s holds no COPY of %s", file, DumpTable)
	}
	return nil
}
