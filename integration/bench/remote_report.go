package bench

import (
	"fmt"
	"math"
	"strings"
	"time"
)

// RemoteSectionName marks the remote instant-restore benchmark's part of
// docs/benchmarks.md (TestRemoteMount).
const RemoteSectionName = "remote-mount-bench"

// The runs of the remote instant-restore benchmark, in table order: the
// original cluster restarted on a cold page cache, and an instant mount
// of the same backup from a file repository, from S3 (MinIO on
// loopback) and from the same S3 repository with every request slower.
const (
	RemoteOriginal = "original cluster, restarted cold"
	RemoteFile     = "instant mount, file repository"
	RemoteS3       = "instant mount, S3 (MinIO)"
	RemoteS3Slow   = "instant mount, S3 (MinIO), every request slower" // the latency is in the row's label
	// remoteDefaultScale is the pgbench scale the section is meant for.
	remoteDefaultScale = 100
	// remoteSteadyFrom is where the goals' steady part starts, seconds
	// after pgbench started.
	remoteSteadyFrom = 10
)

// RemoteOrder is the order of the runs in the table (and of the first
// round; later rounds rotate it).
var RemoteOrder = []string{RemoteOriginal, RemoteFile, RemoteS3, RemoteS3Slow}

// RemoteRun is one round of one run: the time from the mount's start to
// the first query (NaN for the original cluster) and pgbench -S's TPS in
// each window of its progress report; Err says why it produced nothing.
type RemoteRun struct {
	FirstQuery float64
	Windows    []float64
	Err        string
}

// RemoteReport is everything the remote-mount-bench section shows.
type RemoteReport struct {
	Date               time.Time
	Machine            string
	LoadStart, LoadEnd string
	StealPct           float64
	Scale, Count       int
	DataDirMB          float64
	StoredMB           float64 // the backup's stored size on S3
	Seconds, WindowSec int     // pgbench -T and -P
	Clients            int     // pgbench -c
	LatencyMS          int
	Runs               map[string][]RemoteRun // by RemoteOrder name, one per round
	Runtime            time.Duration
	Versions           [][2]string
	Commands           []string
	Notes              []string
	Reproduce          string
	Headline           string
}

// windows is the number of progress windows a full run reports.
func (rep *RemoteReport) windows() int {
	if rep.WindowSec <= 0 {
		return 0
	}
	return rep.Seconds / rep.WindowSec
}

// windowStat is the median (with min-max) over the rounds of a run's TPS
// in window w.
func (rep *RemoteReport) windowStat(run string, w int) Stat {
	var xs []float64
	for _, r := range rep.Runs[run] {
		if r.Err == "" && w < len(r.Windows) {
			xs = append(xs, r.Windows[w])
		}
	}
	return Summarize(xs)
}

// steadyMean is the mean over the windows from remoteSteadyFrom on of the
// run's per-window medians; NaN when a window is missing.
func (rep *RemoteReport) steadyMean(run string) float64 {
	sum, n := 0.0, 0
	for w := rep.steadyStart(); w < rep.windows(); w++ {
		st := rep.windowStat(run, w)
		if !st.OK() {
			return math.NaN()
		}
		sum += st.Median
		n++
	}
	if n == 0 {
		return math.NaN()
	}
	return sum / float64(n)
}

func (rep *RemoteReport) steadyStart() int {
	if rep.WindowSec <= 0 {
		return 0
	}
	return (remoteSteadyFrom + rep.WindowSec - 1) / rep.WindowSec
}

// worstRatio is the lowest, over the windows from remoteSteadyFrom on, of
// the run's median TPS over the original cluster's in the same window;
// NaN when a window is missing.
func (rep *RemoteReport) worstRatio(run string) float64 {
	worst := math.Inf(1)
	for w := rep.steadyStart(); w < rep.windows(); w++ {
		a, b := rep.windowStat(run, w), rep.windowStat(RemoteOriginal, w)
		if !a.OK() || !b.OK() || b.Median <= 0 {
			return math.NaN()
		}
		worst = math.Min(worst, a.Median/b.Median)
	}
	if math.IsInf(worst, 1) {
		return math.NaN()
	}
	return worst
}

// firstQuery is the median over the rounds of a run's time to first
// query.
func (rep *RemoteReport) firstQuery(run string) Stat {
	var xs []float64
	for _, r := range rep.Runs[run] {
		if r.Err == "" && !math.IsNaN(r.FirstQuery) {
			xs = append(xs, r.FirstQuery)
		}
	}
	return Summarize(xs)
}

// Goals evaluates the goals for instant restore from an object
// store: the first query at the added latency, and the TPS from the tenth
// second to the end (the mean of those windows' medians) against the
// original cluster's cold TPS over the same seconds, at the added latency
// and without it. The worst window is shown beside it: the original
// cluster's own TPS jumps whenever its page cache holds the hot pages,
// so a single window says more about when that happened than about the
// mount.
func (rep *RemoteReport) Goals() []Goal {
	var goals []Goal
	fq := rep.firstQuery(RemoteS3Slow)
	g := Goal{Name: fmt.Sprintf("instant mount from S3, every request %d ms slower: first query <= 1.0 s", rep.LatencyMS)}
	if !fq.OK() {
		g.Status, g.Detail = "not measured", "no first query figure"
	} else {
		g.Status, g.Detail = verdict(fq.Median <= 1.0), fmt.Sprintf("%s s", Num(fq.Median))
	}
	goals = append(goals, g)
	orig := rep.steadyMean(RemoteOriginal)
	for _, c := range []struct {
		run   string
		limit float64
		what  string
	}{{RemoteS3Slow, 0.5, fmt.Sprintf("every request %d ms slower", rep.LatencyMS)}, {RemoteS3, 0.8, "no added latency"}} {
		g := Goal{Name: fmt.Sprintf("instant mount from S3, %s: pgbench -S TPS from the %dth second to the end >= %.0f%% of the original cluster's cold TPS over the same seconds",
			c.what, remoteSteadyFrom, c.limit*100)}
		mean := rep.steadyMean(c.run)
		if math.IsNaN(mean) || math.IsNaN(orig) || orig <= 0 {
			g.Status, g.Detail = "not measured", "a window has no figure"
		} else {
			g.Status = verdict(mean >= c.limit*orig)
			g.Detail = fmt.Sprintf("%s vs %s TPS: %.0f%% (worst %d-second window: %.0f%% of the original's in the same window)",
				Num(mean), Num(orig), 100*mean/orig, rep.WindowSec, 100*rep.worstRatio(c.run))
		}
		goals = append(goals, g)
	}
	return goals
}

// label is a run's name in the table.
func (rep *RemoteReport) label(run string) string {
	if run == RemoteS3Slow {
		return fmt.Sprintf("instant mount, S3 (MinIO), every request %d ms slower", rep.LatencyMS)
	}
	return run
}

// Render returns the Markdown of the section (without its markers).
func (rep *RemoteReport) Render() string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	w("## Instant restore from an object store: first query and the first minute of pgbench -S\n\n")
	w("Measured %s on %s. pgbench scale %d (data directory %s MB with pg_wal; the backup stored %s MB on S3), %d round(s); every figure is the median, with min-max when runs differ. "+
		"Load average (1, 5, 15 min) at the start: %s; at the end: %s. %sThe whole run took %s. Reproduce with `%s`.\n\n",
		rep.Date.UTC().Format("2006-01-02 15:04 MST"), rep.Machine, rep.Scale, Num(rep.DataDirMB), Num(rep.StoredMB), rep.Count,
		rep.LoadStart, rep.LoadEnd, stealNote(rep.StealPct), rep.Runtime.Round(time.Second), rep.Reproduce)
	if rep.Scale != remoteDefaultScale {
		w("**This is a quick run at scale %d.** The section and its goals are meant for scale %d: `REMOTE_SCALE=%d COUNT=3` replaces it.\n\n",
			rep.Scale, remoteDefaultScale, remoteDefaultScale)
	}
	if rep.Headline != "" {
		w("%s\n\n", rep.Headline)
	}
	w("### Goals\n\n| goal | verdict | measured |\n|---|---|---|\n")
	for _, g := range rep.Goals() {
		w("| %s | **%s** | %s |\n", g.Name, g.Status, g.Detail)
	}
	w("\n")

	w("### pgbench -S TPS, %d-second windows from the start of pgbench\n\n", rep.WindowSec)
	w("`pgbench -S -c %d -T %d -P %d` right after the server answered its first query and left recovery, with the page cache dropped before the mount (or before the original cluster's restart). "+
		"First query: from the mount command's start (the original cluster: from pg_ctl start) until `SELECT count(*) FROM pgbench_branches` answered. "+
		"The last column is the mean of the windows from %d s on, and its ratio to the original cluster's.\n\n",
		rep.Clients, rep.Seconds, rep.WindowSec, remoteSteadyFrom)
	n := rep.windows()
	w("| run | first query s |")
	for i := 0; i < n; i++ {
		w(" %d-%d s |", i*rep.WindowSec, (i+1)*rep.WindowSec)
	}
	w(" mean from %d s | / original |\n|---|---|", remoteSteadyFrom)
	for i := 0; i < n+2; i++ {
		w("---|")
	}
	w("\n")
	orig := rep.steadyMean(RemoteOriginal)
	for _, run := range RemoteOrder {
		w("| %s | %s |", rep.label(run), cell(rep.firstQuery(run)))
		for i := 0; i < n; i++ {
			st := rep.windowStat(run, i)
			if st.OK() {
				w(" %.0f |", st.Median)
			} else {
				w(" - |")
			}
		}
		mean := rep.steadyMean(run)
		ratio := "-"
		if !math.IsNaN(mean) && orig > 0 {
			ratio = fmt.Sprintf("%.0f%%", 100*mean/orig)
		}
		w(" %s | %s |\n", Num(mean), ratio)
	}
	w("\n")
	var failed []string
	for _, run := range RemoteOrder {
		for i, r := range rep.Runs[run] {
			if r.Err != "" {
				failed = append(failed, fmt.Sprintf("- %s, round %d: %s", rep.label(run), i+1, r.Err))
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
		for _, note := range rep.Notes {
			w("- %s\n", note)
		}
		w("\n")
	}
	return b.String()
}

// ParseProgress reads the TPS of pgbench's progress lines ("progress:
// 5.0 s, 1234.5 tps, lat 1.6 ms stddev 0.4, 0 failed"), in order.
func ParseProgress(out string) []float64 {
	var tps []float64
	for _, line := range strings.Split(out, "\n") {
		rest, ok := strings.CutPrefix(strings.TrimSpace(line), "progress: ")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) < 4 || f[3] != "tps," {
			continue
		}
		var x float64
		if _, err := fmt.Sscanf(f[2], "%g", &x); err == nil {
			tps = append(tps, x)
		}
	}
	return tps
}
