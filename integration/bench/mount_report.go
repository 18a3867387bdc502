package bench

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// MountSectionName marks the instant-restore benchmark's part of
// docs/benchmarks.md (TestMountScales).
const MountSectionName = "mount-bench"

// Steps of the instant-restore benchmark, besides StepRestore, StepStart,
// StepFirstQuery, StepMountSeen and StepMountRead of the peer benchmark.
const (
	StepMountReady    = "instant mount: data directory visible"
	StepPromoted      = "instant mount: promoted"
	StepSelectWarmup  = "pgbench -S, warm-up run"
	StepSelectTPS     = "pgbench -S, measured run"
	StepPgbenchInit   = "pgbench -i"
	ToolNative        = "original cluster"
	FirstQuery        = "SELECT count(*) FROM pgbench_branches"
	MountTTFQLimit    = 5.0 // seconds
	MountScaleLimit   = 1.5 // largest scale's time to first query over the smallest's
	MountReadLimit    = 0.5 // browse-mount cold read over restore throughput
	MountSelectLimit  = 0.7 // pgbench -S on the instant mount over the original cluster
	mountDefaultScale = "100 300"
	// StepDumpTable is one table out of a backup at a point in time:
	// pgvault dump, against pgBackRest restore + start + pg_dump.
	StepDumpTable  = "pg_dump of one table at a point in time"
	DumpTable      = "pgbench_branches"
	DumpTableLimit = 3.0 // seconds
	DumpScaleLimit = 1.5 // largest scale's dump time over the smallest's
)

// MountScale is what TestMountScales measured at one pgbench scale.
type MountScale struct {
	Scale     int
	DataDirMB float64
	Res       *Results
}

// BackupMB is the size of the backup's files (what a restore writes and
// the mount serves; the data directory without pg_wal's segments), or the
// data directory's size when no restore was measured.
func (ms MountScale) BackupMB() float64 {
	for _, x := range [][2]string{{StepRestore, ToolPgvault}, {StepMountRead, ToolPgvault}, {StepRestore, ToolPgbackrest}} {
		if st := ms.Res.Get(x[0], x[1]).Stat(MB); st.OK() {
			return st.Median
		}
	}
	return ms.DataDirMB
}

// MountReport is everything the mount-bench section shows.
type MountReport struct {
	Date               time.Time
	Machine            string
	LoadStart, LoadEnd string
	StealPct           float64 // steal during the run, percent (NaN: unknown)
	Count              int
	Runtime            time.Duration
	Scales             []MountScale
	Goals              []Goal
	Versions           [][2]string
	Commands           []string
	Notes              []string
	Reproduce          string
	PgbenchSec         int
	WarmupSec          int
	LatencyMS          int    // the remote-repository variant's added delay per request; 0: not run
	Headline           string // BENCH_NOTE
}

// ratioOf is a/b of two medians, NaN when either is missing.
func ratioOf(a, b Stat) float64 {
	if !a.OK() || !b.OK() || b.Median == 0 {
		return math.NaN()
	}
	return a.Median / b.Median
}

// EvaluateMountGoals checks the instant-restore goals on every scale (and
// the largest scale against the smallest).
func EvaluateMountGoals(scales []MountScale) []Goal {
	var goals []Goal
	for _, ms := range scales {
		r := ms.Res
		g := Goal{Name: fmt.Sprintf("time to first query from the instant mount <= %s s (scale %d)", Num(MountTTFQLimit), ms.Scale)}
		m := r.Get(StepFirstQuery, ToolPgvaultMount).Stat(Wall)
		if !m.OK() {
			g.Status, g.Detail = "not measured", "no time to first query for the instant mount"
		} else {
			g.Status = verdict(m.Median <= MountTTFQLimit)
			g.Detail = fmt.Sprintf("%s s", cell(m))
			var vs []string
			for _, tool := range []string{ToolPgbackrest, ToolPgvault} {
				if x := ratioOf(m, r.Get(StepFirstQuery, tool).Stat(Wall)); !math.IsNaN(x) {
					vs = append(vs, fmt.Sprintf("%.2fx %s restore + start + query (%s s)", x, mountToolName(tool), Num(r.Get(StepFirstQuery, tool).Stat(Wall).Median)))
				}
			}
			if len(vs) > 0 {
				g.Detail += "; " + strings.Join(vs, ", ")
			}
		}
		goals = append(goals, g)
	}
	if len(scales) >= 2 {
		lo, hi := scales[0], scales[len(scales)-1]
		g := Goal{Name: fmt.Sprintf("time to first query size-independent: scale %d <= %.1fx scale %d", hi.Scale, MountScaleLimit, lo.Scale)}
		a, b := hi.Res.Get(StepFirstQuery, ToolPgvaultMount).Stat(Wall), lo.Res.Get(StepFirstQuery, ToolPgvaultMount).Stat(Wall)
		if x := ratioOf(a, b); math.IsNaN(x) {
			g.Status, g.Detail = "not measured", "the instant mount's time to first query is missing at one scale"
		} else {
			g.Status = verdict(x <= MountScaleLimit)
			g.Detail = fmt.Sprintf("%s s vs %s s: %.2fx, for %.1fx the data (%s MB vs %s MB restored)", Num(a.Median), Num(b.Median), x,
				hi.BackupMB()/lo.BackupMB(), Num(hi.BackupMB()), Num(lo.BackupMB()))
			if pb := ratioOf(hi.Res.Get(StepFirstQuery, ToolPgbackrest).Stat(Wall), lo.Res.Get(StepFirstQuery, ToolPgbackrest).Stat(Wall)); !math.IsNaN(pb) {
				g.Detail += fmt.Sprintf("; pgBackRest restore + start + query: %.2fx", pb)
			}
		}
		goals = append(goals, g)
	}
	for _, ms := range scales {
		r := ms.Res
		g := Goal{Name: fmt.Sprintf("cold read through the browse mount >= %.0f%% of pgvault restore's throughput (scale %d)", 100*MountReadLimit, ms.Scale)}
		a, b := r.Get(StepMountRead, ToolPgvault).Throughput(), r.Get(StepRestore, ToolPgvault).Throughput()
		if x := ratioOf(a, b); math.IsNaN(x) {
			g.Status, g.Detail = "not measured", "no cold-read or restore throughput"
		} else {
			g.Status = verdict(x >= MountReadLimit)
			g.Detail = fmt.Sprintf("%s MB/s vs %s MB/s: %s", Num(a.Median), Num(b.Median), pct(x))
			if rs := r.Get(StepMountRead, ToolRestic).Throughput(); rs.OK() {
				g.Detail += fmt.Sprintf("; restic mount %s MB/s (pgvault %.2fx)", Num(rs.Median), a.Median/rs.Median)
			}
		}
		goals = append(goals, g)
	}
	goals = append(goals, dumpGoals(scales)...)
	for _, ms := range scales {
		r := ms.Res
		g := Goal{Name: fmt.Sprintf("pgbench -S on the instant mount >= %.0f%% of the original cluster's TPS (scale %d)", 100*MountSelectLimit, ms.Scale)}
		a, b := r.Get(StepSelectTPS, ToolPgvaultMount).Stat(TPS), r.Get(StepSelectTPS, ToolNative).Stat(TPS)
		if x := ratioOf(a, b); math.IsNaN(x) {
			g.Status, g.Detail = "not measured", "no pgbench -S figures for both"
		} else {
			g.Status = verdict(x >= MountSelectLimit)
			g.Detail = fmt.Sprintf("%s vs %s TPS: %s", Num(a.Median), Num(b.Median), pct(x))
		}
		goals = append(goals, g)
	}
	return goals
}

// mountToolName names a tool in the mount report's prose.
func mountToolName(tool string) string {
	switch tool {
	case ToolPgbackrest:
		return "pgBackRest"
	case ToolRestic:
		return "restic"
	}
	return tool
}

// IsQuickMountRun reports whether scales are not the stated ones (100 and 300).
func IsQuickMountRun(scales []MountScale) bool {
	var s []string
	for _, ms := range scales {
		s = append(s, strconv.Itoa(ms.Scale))
	}
	return strings.Join(s, " ") != mountDefaultScale
}

// Render returns the Markdown of the section (without its markers).
func (rep *MountReport) Render() string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	w("## Instant restore: time to first query, reads and pgbench -S through the mount\n\n")
	var scaleNames, sizes, backups []string
	for _, ms := range rep.Scales {
		scaleNames = append(scaleNames, strconv.Itoa(ms.Scale))
		sizes = append(sizes, Num(ms.DataDirMB))
		backups = append(backups, Num(ms.BackupMB()))
	}
	w("Measured %s on %s. pgbench scales %s (data directories %s MB with pg_wal; the backups restore %s MB), %d round(s) per scale; every figure is the median, with min-max when runs differ. "+
		"Load average (1, 5, 15 min) at the start: %s; at the end: %s. %sThe whole run took %s. Reproduce with `%s`.\n\n",
		rep.Date.UTC().Format("2006-01-02 15:04 MST"), rep.Machine, strings.Join(scaleNames, " and "), strings.Join(sizes, " and "), strings.Join(backups, " and "), rep.Count,
		rep.LoadStart, rep.LoadEnd, stealNote(rep.StealPct), rep.Runtime.Round(time.Second), rep.Reproduce)
	if IsQuickMountRun(rep.Scales) {
		w("**This is a quick run at scales %s.** The goals are stated for scales 100 and 300: `MOUNT_SCALES=\"100 300\" COUNT=3` replaces this section. "+
			"At small scales fixed costs (process start, key derivation, checkpoints) dominate, so these figures say little about size-independence.\n\n", strings.Join(scaleNames, " and "))
	}
	if rep.Headline != "" {
		w("%s\n\n", rep.Headline)
	}

	w("### Goals\n\n| goal | verdict | numbers |\n|---|---|---|\n")
	for _, g := range rep.Goals {
		v := g.Status
		if v == "met" {
			v = "**met**"
		} else if v == "not met" {
			v = "**NOT met**"
		}
		w("| %s | %s | %s |\n", g.Name, v, g.Detail)
	}
	w("\n")

	// Time to first query.
	w("### Time to first query\n\n")
	w("Seconds from the start of the first command (mount or restore, page cache dropped just before) until `%s` answers on the started server. "+
		"Every path recovers to consistency and promotes (`--to-immediate`, pgBackRest `--type=immediate`); the first query is answered as soon as the server accepts connections (hot standby), which can be before promotion.\n\n", FirstQuery)
	multi := len(rep.Scales) >= 2
	header := func() {
		w("| path |")
		for _, ms := range rep.Scales {
			w(" scale %d |", ms.Scale)
		}
		if multi {
			w(" scale %d / scale %d |", rep.Scales[len(rep.Scales)-1].Scale, rep.Scales[0].Scale)
		}
		w("\n|---|")
		for range rep.Scales {
			w("---|")
		}
		if multi {
			w("---|")
		}
		w("\n")
	}
	header()
	row := func(label string, stat func(r *Results) Stat) {
		w("| %s |", label)
		var first, last Stat
		for i, ms := range rep.Scales {
			st := stat(ms.Res)
			if i == 0 {
				first = st
			}
			last = st
			w(" %s |", cell(st))
		}
		if multi {
			if x := ratioOf(last, first); !math.IsNaN(x) {
				w(" %.2fx |", x)
			} else {
				w(" - |")
			}
		}
		w("\n")
	}
	wall := func(step, tool string) func(r *Results) Stat {
		return func(r *Results) Stat { return r.Get(step, tool).Stat(Wall) }
	}
	row("**pgvault instant mount**: mount + start + query", wall(StepFirstQuery, ToolPgvaultMount))
	row("&nbsp;&nbsp;mount until the data directory is visible", wall(StepMountReady, ToolPgvaultMount))
	row("&nbsp;&nbsp;`pg_ctl start` + first query", wall(StepStart, ToolPgvaultMount))
	row("**pgvault restore** + start + query", wall(StepFirstQuery, ToolPgvault))
	row("&nbsp;&nbsp;`pgvault restore`", wall(StepRestore, ToolPgvault))
	row("&nbsp;&nbsp;`pg_ctl start` + first query", wall(StepStart, ToolPgvault))
	row("**pgBackRest restore** + start + query", wall(StepFirstQuery, ToolPgbackrest))
	row("&nbsp;&nbsp;`pgbackrest restore`", wall(StepRestore, ToolPgbackrest))
	row("&nbsp;&nbsp;`pg_ctl start` + first query", wall(StepStart, ToolPgbackrest))
	if rep.LatencyMS > 0 {
		row(fmt.Sprintf("**pgvault instant mount, every repository request %d ms slower**: mount + start + query", rep.LatencyMS), wall(StepFirstQuery, ToolPgvaultMountRemote))
		row("&nbsp;&nbsp;mount until the data directory is visible", wall(StepMountReady, ToolPgvaultMountRemote))
		row("&nbsp;&nbsp;`pg_ctl start` + first query", wall(StepStart, ToolPgvaultMountRemote))
	}
	row("instant mount: promoted (from the mount's start; the pgbench -S runs' mounts)", wall(StepPromoted, ToolPgvaultMount))
	ratioRow := func(label string, peer string) {
		w("| %s |", label)
		for _, ms := range rep.Scales {
			x := ratioOf(ms.Res.Get(StepFirstQuery, ToolPgvaultMount).Stat(Wall), ms.Res.Get(StepFirstQuery, peer).Stat(Wall))
			if math.IsNaN(x) {
				w(" - |")
			} else {
				w(" %.3fx |", x)
			}
		}
		if multi {
			w(" |")
		}
		w("\n")
	}
	ratioRow("instant mount / pgBackRest restore (medians)", ToolPgbackrest)
	ratioRow("instant mount / pgvault restore (medians)", ToolPgvault)
	w("\n")

	// One table.
	w("### One table at a point in time\n\n")
	w("Seconds from the command's start until `pg_dump` of `%s` has written its last byte, page cache dropped just before, at the backup's consistency point: "+
		"`pgvault dump --table %s --to-immediate -f FILE` (an instant mount, PostgreSQL started on it, pg_dump, everything stopped and removed) against "+
		"`pgbackrest restore --type=immediate`, `pg_ctl start` and `pg_dump --table %s` once the server answers.\n\n", DumpTable, DumpTable, DumpTable)
	header()
	row("**pgvault dump**", wall(StepDumpTable, ToolPgvault))
	row("**pgBackRest** restore + start + pg_dump", wall(StepDumpTable, ToolPgbackrest))
	w("\n")

	// Cold reads.
	w("### Cold sequential read of the whole backup\n\n")
	w("The browse mount (`pgvault mount MNT`) and `restic mount`: every regular file under `snapshots/latest` read once, in directory order, with 1 MiB reads, after the page cache was dropped; " +
		"time from the first open to the last byte (the mount was already visible). `pgvault restore` is the same runs as in the table above (copy-out of the same backup into a new folder, synced to disk before it exits). " +
		"restic backed up the live data directory, so its copy holds pg_wal: compare MB/s, not seconds.\n\n")
	w("| scale | reader | MB | seconds | MB/s | / pgvault restore MB/s | mount process peak RSS MB | runs |\n|---|---|---|---|---|---|---|---|\n")
	for _, ms := range rep.Scales {
		restore := ms.Res.Get(StepRestore, ToolPgvault).Throughput()
		for _, x := range []struct{ label, step, tool string }{
			{"pgvault browse mount", StepMountRead, ToolPgvault},
			{"pgvault restore (copy out)", StepRestore, ToolPgvault},
			{"pgBackRest restore (copy out)", StepRestore, ToolPgbackrest},
			{"restic mount", StepMountRead, ToolRestic},
		} {
			r := ms.Res.Get(x.step, x.tool)
			tp := r.Throughput()
			ratio := "-"
			if v := ratioOf(tp, restore); !math.IsNaN(v) {
				ratio = pct(v)
			}
			rss := "-"
			if x.step == StepMountRead {
				rss = cell(r.Stat(RSS))
			}
			w("| %d | %s | %s | %s | %s | %s | %s | %s |\n", ms.Scale, x.label, cell(r.Stat(MB)), cell(r.Stat(Wall)), cell(tp), ratio, rss, runsCell(r))
		}
	}
	w("\n")

	// pgbench -S.
	w("### pgbench -S on the instant mount\n\n")
	w("`pgbench -S -c 2 -T %d` (select-only, 2 clients, 1 thread) against the original cluster and against a server started on a new instant mount after it promoted; "+
		"each after the page cache was dropped and a warm-up run (`-T %d`), alternating which goes first. TPS as pgbench reports it (without initial connection time).\n\n",
		rep.PgbenchSec, rep.WarmupSec)
	w("| scale | original cluster TPS | instant mount TPS | instant / original (medians) | warm-up: original | warm-up: instant mount |\n|---|---|---|---|---|---|\n")
	for _, ms := range rep.Scales {
		tps := func(step, tool string) Stat { return ms.Res.Get(step, tool).Stat(TPS) }
		n, m := tps(StepSelectTPS, ToolNative), tps(StepSelectTPS, ToolPgvaultMount)
		ratio := "-"
		if x := ratioOf(m, n); !math.IsNaN(x) {
			ratio = pct(x)
		}
		w("| %d | %s | %s | %s | %s | %s |\n", ms.Scale, cell(n), cell(m), ratio, cell(tps(StepSelectWarmup, ToolNative)), cell(tps(StepSelectWarmup, ToolPgvaultMount)))
	}
	w("\n")

	// Setup.
	w("### Setup (once per scale)\n\n| scale | data directory MB | pgbench -i s | pgvault backup s (stored MB) | pgBackRest full backup s (MB) | restic backup s (MB) |\n|---|---|---|---|---|---|\n")
	for _, ms := range rep.Scales {
		bk := func(tool string) string {
			r := ms.Res.Get(StepFull, tool)
			if st := r.Stat(Wall); st.OK() {
				return fmt.Sprintf("%s (%s)", cell(st), cell(r.Stat(MB)))
			}
			return "-"
		}
		w("| %d | %s | %s | %s | %s | %s |\n", ms.Scale, Num(ms.DataDirMB), cell(ms.Res.Get(StepPgbenchInit, ToolNative).Stat(Wall)),
			bk(ToolPgvault), bk(ToolPgbackrest), bk(ToolRestic))
	}
	w("\n")

	var failed []string
	for _, ms := range rep.Scales {
		for _, r := range ms.Res.Rows() {
			seen := map[string]bool{}
			for _, f := range r.Failures {
				if !seen[f] {
					seen[f] = true
					failed = append(failed, fmt.Sprintf("- scale %d, %s, %s: %s", ms.Scale, r.Tool, r.Step, f))
				}
			}
		}
	}
	if len(failed) > 0 {
		w("Runs that produced no figure, and why:\n\n%s\n\n", strings.Join(failed, "\n"))
	}

	w("### Setup and exact commands\n\n")
	w("| program | version |\n|---|---|\n")
	for _, v := range rep.Versions {
		w("| %s | %s |\n", v[0], v[1])
	}
	w("\n```sh\n%s\n```\n\n", strings.Join(rep.Commands, "\n"))
	if len(rep.Notes) > 0 {
		w("Notes:\n\n")
		for _, n := range rep.Notes {
			w("- %s\n", n)
		}
		w("\n")
	}
	return b.String()
}

// runsCell is the number of runs, with failures.
func runsCell(r *Row) string {
	if r == nil {
		return "0"
	}
	s := strconv.Itoa(len(r.Samples))
	if len(r.Failures) > 0 {
		s += fmt.Sprintf(" (%d failed)", len(r.Failures))
	}
	return s
}

// dumpGoals checks the one-table goals: at most DumpTableLimit seconds at
// every scale, and size-independent within DumpScaleLimit.
func dumpGoals(scales []MountScale) []Goal {
	var goals []Goal
	for _, ms := range scales {
		g := Goal{Name: fmt.Sprintf("pg_dump of one table at a point in time <= %s s (scale %d)", Num(DumpTableLimit), ms.Scale)}
		m := ms.Res.Get(StepDumpTable, ToolPgvault).Stat(Wall)
		if !m.OK() {
			g.Status, g.Detail = "not measured", "no time for pgvault dump"
		} else {
			g.Status = verdict(m.Median <= DumpTableLimit)
			g.Detail = fmt.Sprintf("pgvault dump %s s", cell(m))
			if pb := ms.Res.Get(StepDumpTable, ToolPgbackrest).Stat(Wall); pb.OK() {
				g.Detail += fmt.Sprintf("; pgBackRest restore + start + pg_dump %s s (pgvault %.2fx)", Num(pb.Median), m.Median/pb.Median)
			}
		}
		goals = append(goals, g)
	}
	if len(scales) >= 2 {
		lo, hi := scales[0], scales[len(scales)-1]
		g := Goal{Name: fmt.Sprintf("pg_dump of one table size-independent: scale %d <= %.1fx scale %d", hi.Scale, DumpScaleLimit, lo.Scale)}
		a, b := hi.Res.Get(StepDumpTable, ToolPgvault).Stat(Wall), lo.Res.Get(StepDumpTable, ToolPgvault).Stat(Wall)
		if x := ratioOf(a, b); math.IsNaN(x) {
			g.Status, g.Detail = "not measured", "pgvault dump's time is missing at one scale"
		} else {
			g.Status = verdict(x <= DumpScaleLimit)
			g.Detail = fmt.Sprintf("%s s vs %s s: %.2fx, for %.1fx the data", Num(a.Median), Num(b.Median), x, hi.BackupMB()/lo.BackupMB())
			if pb := ratioOf(hi.Res.Get(StepDumpTable, ToolPgbackrest).Stat(Wall), lo.Res.Get(StepDumpTable, ToolPgbackrest).Stat(Wall)); !math.IsNaN(pb) {
				g.Detail += fmt.Sprintf("; pgBackRest restore + start + pg_dump: %.2fx", pb)
			}
		}
		goals = append(goals, g)
	}
	return goals
}
