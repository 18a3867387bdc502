package bench

import (
	"fmt"
	"math"
	"strings"
	"time"
)

// StoreSectionName marks the per-store benchmark's part of
// docs/benchmarks.md (TestStores).
const StoreSectionName = "store-bench"

// The stores a pgvault repository can live on, by their URL scheme. The
// file store is the baseline every other store is divided by.
const (
	StoreFile  = "file"
	StoreS3    = "s3"
	StoreSFTP  = "sftp"
	StoreGCS   = "gs"
	StoreAzure = "azure"
	StoreSwift = "swift"
	// storeDefaultScale is the pgbench scale the section is meant for;
	// any other is called a quick run.
	storeDefaultScale = 100
)

// StoreOrder is the order of the stores in the table (and of the first
// round; later rounds rotate it).
var StoreOrder = []string{StoreFile, StoreS3, StoreSFTP, StoreGCS, StoreAzure, StoreSwift}

// StoreRun is what TestStores measured on one store. Res holds the full
// backup (StepFull) and the restore (StepRestore) of ToolPgvault, and
// the instant mount's time to first query (StepFirstQuery, with
// StepMountReady and StepStart) of ToolPgvaultMount.
type StoreRun struct {
	Store    string // StoreFile, StoreS3, ...
	Server   string // what served the store on loopback
	StartErr string // why the server could not be started; "" when it ran
	Res      *Results
}

// Ran reports whether the store's server started (so it was measured).
func (sr StoreRun) Ran() bool { return sr.StartErr == "" }

// StoreReport is everything the store-bench section shows.
type StoreReport struct {
	Date               time.Time
	Machine            string
	LoadStart, LoadEnd string
	StealPct           float64 // steal during the run, percent (NaN: unknown)
	Scale, Count       int
	DataDirMB          float64
	Runtime            time.Duration
	Stores             []StoreRun
	Versions           [][2]string
	Commands           []string
	Notes              []string
	Reproduce          string
	Headline           string // BENCH_NOTE
}

// storeColumn is one measured column of the per-store table, with its
// ratio to the file store beside it.
type storeColumn struct {
	header     string
	step, tool string
}

// storeColumns are the table's figures, in order.
var storeColumns = []storeColumn{
	{"full backup s", StepFull, ToolPgvault},
	{"restore s", StepRestore, ToolPgvault},
	{"instant mount: first query s", StepFirstQuery, ToolPgvaultMount},
}

// baseline is the file store's run, if it ran.
func (rep *StoreReport) baseline() (StoreRun, bool) {
	for _, sr := range rep.Stores {
		if sr.Store == StoreFile && sr.Ran() {
			return sr, true
		}
	}
	return StoreRun{}, false
}

// fileMB is a size the file store's run measured (stored or restored
// MB), NaN when it did not.
func (rep *StoreReport) fileMB(step string) float64 {
	base, ok := rep.baseline()
	if !ok {
		return math.NaN()
	}
	return base.Res.Get(step, ToolPgvault).Stat(MB).Median
}

// ratioCell is a store's median over the file store's, "-" when either
// is missing.
func ratioCell(st, base Stat) string {
	x := ratioOf(st, base)
	if math.IsNaN(x) {
		return "-"
	}
	return fmt.Sprintf("%.2fx", x)
}

// Render returns the Markdown of the section (without its markers).
func (rep *StoreReport) Render() string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	w("## Per store: backup, restore and instant mount on loopback\n\n")
	w("Measured %s on %s. pgbench scale %d (data directory %s MB with pg_wal; on the file store the backup stored %s MB and restores %s MB), %d round(s); every figure is the median, with min-max when runs differ. "+
		"Load average (1, 5, 15 min) at the start: %s; at the end: %s. %sThe whole run took %s. Reproduce with `%s`.\n\n",
		rep.Date.UTC().Format("2006-01-02 15:04 MST"), rep.Machine, rep.Scale, Num(rep.DataDirMB), Num(rep.fileMB(StepFull)), Num(rep.fileMB(StepRestore)),
		rep.Count, rep.LoadStart, rep.LoadEnd, stealNote(rep.StealPct), rep.Runtime.Round(time.Second), rep.Reproduce)
	if rep.Scale != storeDefaultScale {
		w("**This is a quick run at scale %d.** The section is meant for scale %d: `STORE_SCALE=%d COUNT=3` replaces it. "+
			"At small scales fixed costs (process start, key derivation, connecting to the store, checkpoints) dominate, so the ratios say little about a store's throughput.\n\n",
			rep.Scale, storeDefaultScale, storeDefaultScale)
	}
	if rep.Headline != "" {
		w("%s\n\n", rep.Headline)
	}
	w("Every server runs on this machine and is reached over 127.0.0.1, with its data on the same disk as the cluster: " +
		"the figures show what each store costs pgvault on top of the file store (its SDK or protocol, the requests, the server's own work), not a network's latency or bandwidth. " +
		"`/ file` is the store's median over the file store's.\n\n")
	rep.renderTable(w)
	rep.renderProblems(w)

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

// renderTable writes one row per store: each figure and its ratio to
// the file store, or that the store's server did not start.
func (rep *StoreReport) renderTable(w func(string, ...any)) {
	base, haveBase := rep.baseline()
	w("| store | server |")
	for _, c := range storeColumns {
		w(" %s | / file |", c.header)
	}
	w(" of which mount until the data directory is visible s |\n|---|---|")
	for range storeColumns {
		w("---|---|")
	}
	w("---|\n")
	for _, sr := range rep.Stores {
		w("| %s | %s |", sr.Store, sr.Server)
		if !sr.Ran() {
			w(" **server did not start** |")
			for i := 1; i < 2*len(storeColumns)+1; i++ {
				w(" - |")
			}
			w("\n")
			continue
		}
		for _, c := range storeColumns {
			st := sr.Res.Get(c.step, c.tool).Stat(Wall)
			ratio := "-"
			if haveBase {
				ratio = ratioCell(st, base.Res.Get(c.step, c.tool).Stat(Wall))
			}
			w(" %s | %s |", cell(st), ratio)
		}
		w(" %s |\n", cell(sr.Res.Get(StepMountReady, ToolPgvaultMount).Stat(Wall)))
	}
	w("\n")
}

// renderProblems lists the stores whose server did not start and the
// runs that produced no figure, each with why.
func (rep *StoreReport) renderProblems(w func(string, ...any)) {
	var down, failed []string
	for _, sr := range rep.Stores {
		if !sr.Ran() {
			down = append(down, fmt.Sprintf("- %s (%s): %s", sr.Store, sr.Server, sr.StartErr))
			continue
		}
		for _, r := range sr.Res.Rows() {
			seen := map[string]bool{}
			for _, f := range r.Failures {
				if !seen[f] {
					seen[f] = true
					failed = append(failed, fmt.Sprintf("- %s, %s, %s: %s", sr.Store, r.Tool, r.Step, f))
				}
			}
		}
	}
	if len(down) > 0 {
		w("Stores whose server did not start (not measured):\n\n%s\n\n", strings.Join(down, "\n"))
	}
	if len(failed) > 0 {
		w("Runs that produced no figure, and why:\n\n%s\n\n", strings.Join(failed, "\n"))
	}
}
