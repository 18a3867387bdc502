package bench

import (
	"math"
	"sort"
	"strings"
)

// Step names: the rows of the results table, in this order.
const (
	StepFull       = "full backup"
	StepIncrChange = "2nd backup after 5% UPDATE"
	StepIncrBench  = "3rd backup after pgbench"
	// StepIncrShort is pgvault's backup after a further, shorter pgbench
	// run (BENCH_SHORT_PGBENCH_SECONDS, 30 s by default): the second
	// dedup figure base backups are judged by.
	StepIncrShort = "4th backup after a shorter pgbench"
	// StepIncrOnePct is the backup after a 1% scattered UPDATE (every
	// 100th account): pgvault's regular and synthetic backups and
	// pgBackRest's incremental.
	StepIncrOnePct = "5th backup after a 1% scattered UPDATE"
	// StepRestoreEnd is a restore to the end of the WAL after pgbench,
	// started and promoted: from the synthetic backup, or from its parent
	// with the WAL replayed.
	StepRestoreEnd = "restore to the end of pgbench's WAL, promoted"
	StepRestore    = "restore (copy out)"
	StepStart      = "start + SELECT 1"
	StepFirstQuery = "restore to first query"
	StepMountSeen  = "mount: snapshot visible"
	StepMountRead  = "mount: cold read of all files"
	StepWALPush    = "WAL: archive one segment"
	StepWALFetch   = "WAL: fetch one segment in a row of them"
	StepWALStream  = "WAL: stream under pgbench"
	// StepWALIngest is a receiver catching up a backlog of WAL its slot
	// kept: the highest rate it stores (BENCH_INGEST_MB of backlog).
	StepWALIngest = "WAL: catch up a backlog (ingest ceiling)"
)

// StepOrder is the order of steps in the table and the chart.
var StepOrder = []string{StepFull, StepIncrChange, StepIncrBench, StepIncrShort, StepIncrOnePct, StepRestore, StepStart,
	StepFirstQuery, StepRestoreEnd, StepMountSeen, StepMountRead, StepWALPush, StepWALFetch, StepWALStream, StepWALIngest}

// Tool names.
const (
	ToolPgvault      = "pgvault"
	ToolPgvaultMount = "pgvault instant mount"
	// ToolPgvaultMountRemote is the instant mount on a repository every
	// request to which is MOUNT_LATENCY_MS slower (mount bench only).
	ToolPgvaultMountRemote = "pgvault instant mount, remote repository"
	// ToolPgvaultStream is a diagnostic: pgvault's full backup with the
	// files sent by BASE_BACKUP (--method stream), where ToolPgvault reads
	// them from the data directory (--method auto picks local).
	ToolPgvaultStream = "pgvault, stream"
	// ToolPgvaultNoPrefetch is pgvault's wal fetch with its prefetching
	// spool off (--prefetch 0).
	ToolPgvaultNoPrefetch = "pgvault, no prefetch"
	// ToolPgvaultSynthetic is pgvault's synthetic backup (backup
	// --synthetic: the previous backup rolled forward with the WAL pgvault
	// archived, nothing read from the database), and ToolPgvaultParentWAL
	// that previous backup restored with the same WAL replayed.
	ToolPgvaultSynthetic = "pgvault, synthetic"
	ToolPgvaultParentWAL = "pgvault, synthetic's parent + WAL"
	ToolBasebackup       = "pg_basebackup"
	ToolReceivewal       = "pg_receivewal"
	ToolPgbackrest       = "pgbackrest"
	ToolRestic           = "restic"
	ToolBarman           = "barman"
)

// ToolOrder is the order of tools within a step.
var ToolOrder = []string{ToolPgvault, ToolPgvaultStream, ToolPgvaultSynthetic, ToolPgvaultParentWAL, ToolPgvaultNoPrefetch, ToolPgvaultMount, ToolBasebackup, ToolReceivewal, ToolPgbackrest, ToolRestic, ToolBarman}

// IsPgvault reports whether tool is one of pgvault's ways of doing a step.
func IsPgvault(tool string) bool { return strings.HasPrefix(tool, "pgvault") }

// Sample is one run of one tool in one step. NaN means "not measured".
type Sample struct {
	Wall      float64 // seconds
	CPU       float64 // user+sys seconds of the tool's own processes (wait4 rusage)
	ServerCPU float64 // seconds of PostgreSQL's processes during the step
	RSSMB     float64 // peak resident set of the tool's processes, MB
	MB        float64 // stored, added, restored or read, MB (10^6 bytes)
	TPS       float64 // transactions per second (pgbench runs)
}

// NewSample returns a sample with every field NaN.
func NewSample() Sample {
	n := math.NaN()
	return Sample{Wall: n, CPU: n, ServerCPU: n, RSSMB: n, MB: n, TPS: n}
}

// Row is every run of one tool in one step.
type Row struct {
	Step, Tool string
	Samples    []Sample
	Failures   []string // why runs failed (each failed run once)
}

// Results collects rows.
type Results struct {
	rows []*Row
}

// Add records a run.
func (r *Results) Add(step, tool string, s Sample) {
	row := r.row(step, tool)
	row.Samples = append(row.Samples, s)
}

// Fail records a run that did not produce a figure, and why.
func (r *Results) Fail(step, tool, why string) {
	row := r.row(step, tool)
	row.Failures = append(row.Failures, why)
}

func (r *Results) row(step, tool string) *Row {
	for _, x := range r.rows {
		if x.Step == step && x.Tool == tool {
			return x
		}
	}
	x := &Row{Step: step, Tool: tool}
	r.rows = append(r.rows, x)
	return x
}

// Get returns the row of step and tool, or nil.
func (r *Results) Get(step, tool string) *Row {
	for _, x := range r.rows {
		if x.Step == step && x.Tool == tool {
			return x
		}
	}
	return nil
}

// Rows returns the rows sorted by StepOrder, then ToolOrder.
func (r *Results) Rows() []*Row {
	out := append([]*Row(nil), r.rows...)
	sort.SliceStable(out, func(i, j int) bool {
		si, sj := index(StepOrder, out[i].Step), index(StepOrder, out[j].Step)
		if si != sj {
			return si < sj
		}
		return index(ToolOrder, out[i].Tool) < index(ToolOrder, out[j].Tool)
	})
	return out
}

func index(list []string, s string) int {
	for i, x := range list {
		if x == s {
			return i
		}
	}
	return len(list)
}

// Stat is the median and range of one field over a row's runs.
type Stat struct {
	Median, Min, Max float64
	N                int
}

// OK reports whether there was at least one value.
func (s Stat) OK() bool { return s.N > 0 }

// Summarize returns the median and range of the non-NaN values.
func Summarize(vs []float64) Stat {
	var xs []float64
	for _, v := range vs {
		if !math.IsNaN(v) {
			xs = append(xs, v)
		}
	}
	if len(xs) == 0 {
		return Stat{Median: math.NaN(), Min: math.NaN(), Max: math.NaN()}
	}
	sort.Float64s(xs)
	med := xs[len(xs)/2]
	if len(xs)%2 == 0 {
		med = (xs[len(xs)/2-1] + xs[len(xs)/2]) / 2
	}
	return Stat{Median: med, Min: xs[0], Max: xs[len(xs)-1], N: len(xs)}
}

// Percentile returns the p-th percentile (0..100, nearest rank) of vs.
func Percentile(vs []float64, p float64) float64 {
	if len(vs) == 0 {
		return math.NaN()
	}
	xs := append([]float64(nil), vs...)
	sort.Float64s(xs)
	rank := int(math.Ceil(p/100*float64(len(xs)))) - 1
	if rank < 0 {
		rank = 0
	}
	if rank >= len(xs) {
		rank = len(xs) - 1
	}
	return xs[rank]
}

// Field selects one field of a sample.
type Field func(Sample) float64

// Fields of a sample.
var (
	Wall      Field = func(s Sample) float64 { return s.Wall }
	CPU       Field = func(s Sample) float64 { return s.CPU }
	ServerCPU Field = func(s Sample) float64 { return s.ServerCPU }
	RSS       Field = func(s Sample) float64 { return s.RSSMB }
	MB        Field = func(s Sample) float64 { return s.MB }
	TPS       Field = func(s Sample) float64 { return s.TPS }
)

// Stat summarizes one field of the row (a nil row gives an empty Stat).
func (row *Row) Stat(f Field) Stat {
	if row == nil {
		return Summarize(nil)
	}
	vs := make([]float64, len(row.Samples))
	for i, s := range row.Samples {
		vs[i] = f(s)
	}
	return Summarize(vs)
}

// BestPeer returns the peer (non-pgvault tool) with the lowest median of
// field f in step, and that median; ok is false when no peer has one.
func (r *Results) BestPeer(step string, f Field) (tool string, median float64, ok bool) {
	for _, row := range r.Rows() {
		if row.Step != step || IsPgvault(row.Tool) {
			continue
		}
		st := row.Stat(f)
		if st.OK() && (!ok || st.Median < median) {
			tool, median, ok = row.Tool, st.Median, true
		}
	}
	return tool, median, ok
}

// Throughput summarizes MB per wall second over the row's runs.
func (row *Row) Throughput() Stat {
	if row == nil {
		return Summarize(nil)
	}
	var vs []float64
	for _, s := range row.Samples {
		if s.Wall > 0 && !math.IsNaN(s.MB) {
			vs = append(vs, s.MB/s.Wall)
		}
	}
	return Summarize(vs)
}

// BestPeerThroughput returns the peer with the highest median MB/s in
// step.
func (r *Results) BestPeerThroughput(step string) (tool string, median float64, ok bool) {
	for _, row := range r.Rows() {
		if row.Step != step || IsPgvault(row.Tool) {
			continue
		}
		st := row.Throughput()
		if st.OK() && (!ok || st.Median > median) {
			tool, median, ok = row.Tool, st.Median, true
		}
	}
	return tool, median, ok
}
