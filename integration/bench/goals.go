package bench

import (
	"fmt"
	"math"
)

// Goal is one target of the issue, evaluated on one run of the benchmark.
type Goal struct {
	Name   string
	Detail string // the numbers behind the verdict
	Status string // "met", "not met" or "not measured"
}

// RSSLimitMB is the ceiling for the peak RSS of every pgvault command.
const RSSLimitMB = 300

// syntheticServerCPU is the most CPU PostgreSQL's processes may use while
// a synthetic backup runs: their background work (checkpointer, WAL
// writer, autovacuum launcher), never a backup's reading.
const syntheticServerCPU = 0.1

// EvaluateGoals checks pgvault's medians against the peers' in the same
// run. scale is the pgbench scale the run used (some goals are stated for
// scale 100).
func EvaluateGoals(r *Results, scale int) []Goal {
	var goals []Goal
	ratio := func(name, step, tool, peer string, f Field, limit float64, unit string, higherIsBetter bool) {
		g := Goal{Name: name}
		a, b := r.Get(step, tool).Stat(f), r.Get(step, peer).Stat(f)
		switch {
		case !a.OK():
			g.Status, g.Detail = "not measured", fmt.Sprintf("no %s figure for %s", step, tool)
		case !b.OK():
			g.Status, g.Detail = "not measured", fmt.Sprintf("no %s figure for %s", step, peer)
		default:
			x := a.Median / b.Median
			met := x <= limit
			if higherIsBetter {
				met = x >= limit
			}
			g.Status = verdict(met)
			g.Detail = fmt.Sprintf("%s %s %s vs %s %s %s: %.2fx (limit %.2fx)", tool, Num(a.Median), unit, peer, Num(b.Median), unit, x, limit)
		}
		goals = append(goals, g)
	}
	ratio("full backup wall time <= 0.8x pgBackRest's", StepFull, ToolPgvault, ToolPgbackrest, Wall, 0.8, "s", false)
	ratio("full backup wall time <= pg_basebackup's", StepFull, ToolPgvault, ToolBasebackup, Wall, 1.0, "s", false)
	ratio("added bytes after a 5% change <= 0.5x restic's", StepIncrChange, ToolPgvault, ToolRestic, MB, 0.5, "MB", false)
	ratio("added bytes after a 5% change <= pgBackRest incr's", StepIncrChange, ToolPgvault, ToolPgbackrest, MB, 1.0, "MB", false)

	name := "time to first query from instant mount <= 0.1x pgBackRest restore + start"
	if scale != 100 {
		name += fmt.Sprintf(" (stated for scale 100; this run: scale %d)", scale)
	}
	ratio(name, StepFirstQuery, ToolPgvaultMount, ToolPgbackrest, Wall, 0.1, "s", false)

	ratio("synthetic backup after pgbench -T 60: wall time <= 1.0x pgvault's backup", StepIncrBench, ToolPgvaultSynthetic, ToolPgvault, Wall, 1.0, "s", false)
	ratio("synthetic backup after a 1% change: wall time <= 0.3x pgvault's backup", StepIncrOnePct, ToolPgvaultSynthetic, ToolPgvault, Wall, 0.3, "s", false)
	for _, step := range []string{StepIncrBench, StepIncrOnePct} {
		g := Goal{Name: fmt.Sprintf("synthetic backup (%s) reads nothing from the database: server CPU <= %.2f s (its background processes)", step, syntheticServerCPU)}
		st := r.Get(step, ToolPgvaultSynthetic).Stat(ServerCPU)
		if !st.OK() {
			g.Status, g.Detail = "not measured", "no server CPU figure for the synthetic backup"
		} else {
			g.Status = verdict(st.Max <= syntheticServerCPU)
			g.Detail = fmt.Sprintf("PostgreSQL's CPU during the synthetic backup: %s s at most (pgvault's regular backup: %s s); no connection is opened, so 0 bytes are read from the database host",
				Num(st.Max), Num(r.Get(step, ToolPgvault).Stat(ServerCPU).Median))
		}
		goals = append(goals, g)
	}

	tp := func(tool string) Stat { return r.Get(StepRestore, tool).Throughput() }
	g := Goal{Name: "restore throughput >= 1.0x pgBackRest's"}
	a, b := tp(ToolPgvault), tp(ToolPgbackrest)
	if !a.OK() || !b.OK() {
		g.Status, g.Detail = "not measured", "no restore figures for pgvault and pgbackrest"
	} else {
		x := a.Median / b.Median
		g.Status = verdict(x >= 1.0)
		g.Detail = fmt.Sprintf("pgvault %s MB/s vs pgbackrest %s MB/s: %.2fx", Num(a.Median), Num(b.Median), x)
	}
	goals = append(goals, g)

	ratio("wal fetch of one segment in a row of them: wall time <= 1.0x pgBackRest's archive-get", StepWALFetch, ToolPgvault, ToolPgbackrest, Wall, 1.0, "s", false)

	g = Goal{Name: "WAL ingest ceiling: wal stream stores a backlog at >= 0.8x pg_receivewal's rate"}
	a, b = r.Get(StepWALIngest, ToolPgvault).Throughput(), r.Get(StepWALIngest, ToolReceivewal).Throughput()
	if !a.OK() || !b.OK() {
		g.Status, g.Detail = "not measured", "no WAL ingest figures for pgvault and pg_receivewal"
	} else {
		x := a.Median / b.Median
		g.Status = verdict(x >= 0.8)
		g.Detail = fmt.Sprintf("pgvault %s MB/s vs pg_receivewal %s MB/s: %.2fx (peak RSS while behind: %s MB)",
			Num(a.Median), Num(b.Median), x, Num(r.Get(StepWALIngest, ToolPgvault).Stat(RSS).Max))
	}
	goals = append(goals, g)

	g = Goal{Name: fmt.Sprintf("peak RSS of every pgvault command <= %d MB", RSSLimitMB)}
	if scale != 100 {
		g.Name += fmt.Sprintf(" (stated for scale 100; this run: scale %d)", scale)
	}
	worst, worstWhat := math.NaN(), ""
	for _, row := range r.Rows() {
		if !IsPgvault(row.Tool) {
			continue
		}
		if st := row.Stat(RSS); st.OK() && (math.IsNaN(worst) || st.Max > worst) {
			worst, worstWhat = st.Max, row.Tool+", "+row.Step
		}
	}
	if math.IsNaN(worst) {
		g.Status, g.Detail = "not measured", "no RSS figures"
	} else {
		g.Status = verdict(worst <= RSSLimitMB)
		g.Detail = fmt.Sprintf("highest: %s MB (%s)", Num(worst), worstWhat)
	}
	goals = append(goals, g)
	return goals
}

func verdict(met bool) string {
	if met {
		return "met"
	}
	return "not met"
}
