package bench

import (
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
	"time"
)

// SectionName marks the benchmark's part of docs/benchmarks.md.
const SectionName = "peer-bench"

// StreamRun is one run of `pgvault wal stream` under pgbench.
type StreamRun struct {
	FirstReport    float64 // seconds from starting the streamer to its first flush report
	Seconds        float64
	Samples        int
	LagP50, LagP99 float64 // bytes: pg_current_wal_lsn() - slot restart_lsn
	LagMax         float64
	WALMBps        float64 // WAL generated per second during the run
	TPS            float64
}

// Profile is what the CPU profile of pgvault's slowest step shows.
type Profile struct {
	Why         string // why this step was profiled
	Step, Tool  string
	File        string
	Wall        float64
	User, Sys   float64
	ServerCPU   float64
	Categories  []Category // share of the profile's samples
	Top         string     // `go tool pprof -top` (first lines)
	Explanation string
}

// Category is a share of a CPU profile.
type Category struct {
	Name    string
	Percent float64
}

// Report is everything the Markdown section shows.
type Report struct {
	Date       time.Time
	Machine    string
	Cores      int // for the CPU floor; 0 leaves it out
	LoadStart  string
	LoadEnd    string
	StealPct   float64 // steal during the run, percent (NaN: unknown)
	Scale      int
	Count      int
	DataDirMB  float64
	Runtime    time.Duration
	Versions   [][2]string
	Commands   []string
	Results    *Results
	Stream     []StreamRun
	Goals      []Goal
	Profiles   []*Profile
	Notes      []string
	Chart      string // path of the chart relative to the document
	Reproduce  string
	PgbenchSec int
	ShortSec   int    // pgbench -T before the 4th backup
	Headline   string // BENCH_NOTE: a remark about this run, shown at the top
}

// Num formats a figure with 3 significant digits (at least).
func Num(v float64) string {
	switch {
	case math.IsNaN(v):
		return "-"
	case math.Abs(v) >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case math.Abs(v) >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	case math.Abs(v) >= 1:
		return strconv.FormatFloat(v, 'f', 2, 64)
	case v == 0:
		return "0"
	}
	return strconv.FormatFloat(v, 'f', 3, 64)
}

// cell is "median (min-max)", or "-" without values.
func cell(st Stat) string {
	if !st.OK() {
		return "-"
	}
	if st.N == 1 || st.Min == st.Max {
		return Num(st.Median)
	}
	return fmt.Sprintf("%s (%s-%s)", Num(st.Median), Num(st.Min), Num(st.Max))
}

// Render returns the Markdown of the section (without its markers).
func (rep *Report) Render() string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	w("## Against the peers: pg_basebackup, pgBackRest, restic, barman\n\n")
	w("Measured %s on %s. pgbench scale %d (data directory %s MB), %d round(s); every figure is the median, with min-max when runs differ. "+
		"Load average (1, 5, 15 min) at the start: %s; at the end: %s. %sThe whole run took %s. Reproduce with `%s`.\n\n",
		rep.Date.UTC().Format("2006-01-02 15:04 MST"), rep.Machine, rep.Scale, Num(rep.DataDirMB), rep.Count,
		rep.LoadStart, rep.LoadEnd, stealNote(rep.StealPct), rep.Runtime.Round(time.Second), rep.Reproduce)
	if rep.Scale != 100 {
		w("**This is a quick run at scale %d.** The goals are stated for scale 100: `SCALE=100 COUNT=3 make bench` (about 30 minutes on this machine when it is idle, estimated from the scale-10 runs: the data-dependent steps grow about 5x, the pgbench runs do not) replaces this section. "+
			"At small scale fixed costs (process start, key derivation, connections, checkpoints, fsync) weigh more, so these ratios are not the scale-100 ratios.\n\n", rep.Scale)
	}
	if rep.Headline != "" {
		w("%s\n\n", rep.Headline)
	}
	if rep.Chart != "" {
		w("![backup and restore time by tool](%s)\n\n", rep.Chart)
		w("*Median wall time per step and tool, with a line from the fastest to the slowest run. The exact figures are in the table below.*\n\n")
	}

	w("### Goals (pgvault as a ratio to the peer, same run)\n\n| goal | verdict | numbers |\n|---|---|---|\n")
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

	w("### Results\n\n")
	w("Wall and CPU times in seconds; CPU is user+sys of the tool's own processes (wait4 rusage, children included); " +
		"server CPU is PostgreSQL's processes during the step (for pg_basebackup, barman and `pgvault, stream` the walsender does the reading, and for pg_basebackup the zstd compression); " +
		"peak RSS in MB; MB is what the step stored (backups: the backup itself, WAL archive excluded), restored (data directory size) or read. " +
		"The last column is pgvault's median as a ratio to the best peer's in that step: wall time and stored/added MB (lower is better), or, for restores and mount reads, MB/s (higher is better: the tools restore different amounts).\n\n")
	w("| step | tool | wall s | CPU s | server CPU s | peak RSS MB | MB | runs | pgvault / best peer |\n|---|---|---|---|---|---|---|---|---|\n")
	for _, row := range rep.Results.Rows() {
		runs := strconv.Itoa(len(row.Samples))
		if len(row.Failures) > 0 {
			runs += fmt.Sprintf(" (%d failed)", len(row.Failures))
		}
		w("| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", row.Step, row.Tool,
			cell(row.Stat(Wall)), cell(row.Stat(CPU)), cell(row.Stat(ServerCPU)), cell(row.Stat(RSS)), cell(row.Stat(MB)),
			runs, rep.ratioCell(row))
	}
	w("\n")
	var failed []string
	for _, row := range rep.Results.Rows() {
		seen := map[string]bool{}
		for _, f := range row.Failures {
			if !seen[f] {
				seen[f] = true
				failed = append(failed, fmt.Sprintf("- %s, %s: %s", row.Tool, row.Step, f))
			}
		}
	}
	if len(failed) > 0 {
		w("Runs that produced no figure, and why:\n\n%s\n\n", strings.Join(failed, "\n"))
	}

	if a, d := rep.Results.Get(StepFull, ToolPgvault).Stat(Wall), rep.Results.Get(StepFull, ToolPgvaultStream).Stat(Wall); a.OK() && d.OK() {
		w("The diagnostic row: pgvault's full backup takes %s s (median) reading the data directory itself (method local) and %s s "+
			"with the files sent by BASE_BACKUP (method stream, as from another machine)", Num(a.Median), Num(d.Median))
		if sa, sd := rep.Results.Get(StepFull, ToolPgvault).Stat(ServerCPU), rep.Results.Get(StepFull, ToolPgvaultStream).Stat(ServerCPU); sa.OK() && sd.OK() {
			w("; PostgreSQL's processes used %s s and %s s of CPU", Num(sa.Median), Num(sd.Median))
		}
		w(".\n\n")
	}

	rep.cpuFloor(w)

	if f, c := rep.Results.Get(StepFull, ToolPgvault).Stat(MB), rep.Results.Get(StepIncrChange, ToolPgvault).Stat(MB); f.OK() && c.OK() && f.Median > 0 {
		w("Deduplication: pgvault's second backup, after the 5%% UPDATE, stored %s MB, %.1f%% of what its full backup stored (%s MB; medians)",
			Num(c.Median), 100*c.Median/f.Median, Num(f.Median))
		if b := rep.Results.Get(StepIncrBench, ToolPgvault).Stat(MB); b.OK() {
			w("; the third, after `pgbench -T %d`, stored %s MB, %.0f%%", rep.PgbenchSec, Num(b.Median), 100*b.Median/f.Median)
			if s := rep.Results.Get(StepIncrShort, ToolPgvault).Stat(MB); s.OK() {
				w(", and the fourth, after a further `pgbench -T %d`, %s MB, %.0f%%", rep.ShortSec, Num(s.Median), 100*s.Median/f.Median)
			}
			w(": pgbench's UPDATEs land on random rows, so they change nearly every 128 KiB chunk of pgbench_accounts")
		}
		w(".\n\n")
	}

	if len(rep.Stream) > 0 {
		w("### WAL streaming lag under load\n\n")
		w("`pgvault wal stream` on a new physical slot (after a CHECKPOINT); once the streamer has sent its first flush report " +
			"(until then restart_lsn stays where the slot reserved WAL), `pgbench -c 4 -j 2 -T N` runs and every 100 ms the benchmark samples " +
			"`pg_current_wal_lsn() - restart_lsn` of the slot (how much WAL the server holds back for the streamer: " +
			"restart_lsn moves when pgvault reports WAL as durable in the repository). WAL MB/s is what the server wrote during the run " +
			"(more right after a checkpoint: full-page images).\n\n")
		w("| run | first flush report after s | seconds | samples | lag p50 | lag p99 | lag max | WAL MB/s | pgbench TPS |\n|---|---|---|---|---|---|---|---|---|\n")
		for i, s := range rep.Stream {
			w("| %d | %s | %s | %d | %s | %s | %s | %s | %s |\n", i+1, Num(s.FirstReport), Num(s.Seconds), s.Samples,
				bytesHuman(s.LagP50), bytesHuman(s.LagP99), bytesHuman(s.LagMax), Num(s.WALMBps), Num(s.TPS))
		}
		w("\n")
	}

	for _, p := range rep.Profiles {
		w("### Profile of pgvault's %s: %s\n\n", p.Why, p.Step)
		server := ""
		if !math.IsNaN(p.ServerCPU) {
			server = fmt.Sprintf("; PostgreSQL's processes used %s s", Num(p.ServerCPU))
		}
		w("Profile `%s` (PGVAULT_CPUPROFILE, the step's last run). Wall %s s; pgvault used %s s of CPU (user %s, sys %s) "+
			"— %s of one core over the wall time, on a 2-core machine%s.\n\n",
			p.File, Num(p.Wall), Num(p.User+p.Sys), Num(p.User), Num(p.Sys), pct((p.User+p.Sys)/p.Wall), server)
		if len(p.Categories) > 0 {
			w("Where pgvault's CPU samples are:\n\n| part | share of samples |\n|---|---|\n")
			for _, c := range p.Categories {
				w("| %s | %s%% |\n", c.Name, Num(c.Percent))
			}
			w("\n")
		}
		if p.Explanation != "" {
			w("%s\n\n", p.Explanation)
		}
		if p.Top != "" {
			w("<details><summary>go tool pprof -top</summary>\n\n```\n%s\n```\n</details>\n\n", strings.TrimSpace(p.Top))
		}
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

// ratioCell is pgvault's median over the best peer's, for wall time and,
// where the step stores something, MB.
func (rep *Report) ratioCell(row *Row) string {
	if !IsPgvault(row.Tool) {
		return ""
	}
	var parts []string
	if row.Step == StepRestore || row.Step == StepMountRead {
		// The tools restore or read different amounts (restic's copy of
		// the live data directory holds pg_wal): compare MB/s.
		if st := row.Throughput(); st.OK() {
			if peer, m, ok := rep.Results.BestPeerThroughput(row.Step); ok && m > 0 {
				parts = append(parts, fmt.Sprintf("%.2fx MB/s (%s: %s vs %s MB/s)", st.Median/m, peer, Num(st.Median), Num(m)))
			}
		}
		return strings.Join(parts, "; ")
	}
	if st := row.Stat(Wall); st.OK() {
		if peer, m, ok := rep.Results.BestPeer(row.Step, Wall); ok && m > 0 {
			parts = append(parts, fmt.Sprintf("%.2fx time (%s)", st.Median/m, peer))
		}
	}
	switch row.Step {
	case StepFull, StepIncrChange, StepIncrBench, StepIncrShort:
		if st := row.Stat(MB); st.OK() {
			if peer, m, ok := rep.Results.BestPeer(row.Step, MB); ok && m > 0 {
				parts = append(parts, fmt.Sprintf("%.2fx MB (%s)", st.Median/m, peer))
			}
		}
	}
	return strings.Join(parts, "; ")
}

func pct(x float64) string {
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return "-"
	}
	return fmt.Sprintf("%.0f%%", 100*x)
}

func bytesHuman(v float64) string {
	switch {
	case math.IsNaN(v):
		return "-"
	case v >= 1<<20:
		return Num(v/(1<<20)) + " MiB"
	case v >= 1<<10:
		return Num(v/(1<<10)) + " KiB"
	}
	return Num(v) + " B"
}

// ReplaceSection swaps the text between <!-- BEGIN name --> and
// <!-- END name --> in the file at path, appending the markers and body
// when the file has none. Other sections are left as they are.
func ReplaceSection(path, name, body string) error {
	data, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	text := ReplaceSectionText(string(data), name, body)
	return os.WriteFile(path, []byte(text), 0o644)
}

// ReplaceSectionText is ReplaceSection on a string.
func ReplaceSectionText(text, name, body string) string {
	begin, end := "<!-- BEGIN "+name+" -->", "<!-- END "+name+" -->"
	block := begin + "\n" + strings.TrimRight(body, "\n") + "\n" + end
	i := strings.Index(text, begin)
	j := strings.Index(text, end)
	if i >= 0 && j > i {
		return text[:i] + block + text[j+len(end):]
	}
	return strings.TrimRight(text, "\n") + "\n\n" + block + "\n"
}

// cpuFloor writes the full backup's CPU floor: no schedule on Cores cores
// finishes before the tool's and the server's CPU time, divided by the
// cores. pgvault's backup has the walsender read and send every file;
// pgBackRest reads the files itself. The floor shows which wall-time goals
// the CPU use alone rules out.
func (rep *Report) cpuFloor(w func(string, ...any)) {
	if rep.Cores < 1 {
		return
	}
	floor := func(tool string) (float64, Stat, Stat, bool) {
		row := rep.Results.Get(StepFull, tool)
		c, sc := row.Stat(CPU), row.Stat(ServerCPU)
		if !c.OK() || !sc.OK() {
			return 0, c, sc, false
		}
		return (c.Median + sc.Median) / float64(rep.Cores), c, sc, true
	}
	pv, pc, ps, ok := floor(ToolPgvault)
	if !ok {
		return
	}
	w("CPU floor of the full backup: on %d cores no run can finish before (the tool's CPU + the server's CPU) / %d, medians. "+
		"pgvault: (%s + %s) / %d = %s s", rep.Cores, rep.Cores, Num(pc.Median), Num(ps.Median), rep.Cores, Num(pv))
	if bw := rep.Results.Get(StepFull, ToolPgbackrest).Stat(Wall); bw.OK() && bw.Median > 0 {
		w(", %.2fx pgBackRest's wall time (%s s)", pv/bw.Median, Num(bw.Median))
		if b, bc, bs, ok := floor(ToolPgbackrest); ok {
			w("; pgBackRest: (%s + %s) / %d = %s s", Num(bc.Median), Num(bs.Median), rep.Cores, Num(b))
		}
		w(". Both read the files themselves here (pgvault's method local); a streamed backup adds the walsender, which reads and sends every file (the diagnostic row's server CPU)")
		if pv/bw.Median > 0.8 {
			w(", so 0.8x pgBackRest's wall time is below pgvault's floor on this machine: only less CPU, pgvault's or the server's, can reach it")
		}
	}
	w(".\n\n")
}
