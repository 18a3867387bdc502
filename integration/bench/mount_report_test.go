package bench

import (
	"math"
	"strings"
	"testing"
	"time"
)

func mountScaleFor(scale int, mb, ttfq, restoreS, mountReadS, nativeTPS, mountTPS, dumpS float64) MountScale {
	r := &Results{}
	add := func(step, tool string, wall, mb, tps float64) {
		s := NewSample()
		s.Wall, s.MB, s.TPS = wall, mb, tps
		r.Add(step, tool, s)
	}
	nan := math.NaN()
	add(StepFirstQuery, ToolPgvaultMount, ttfq, nan, nan)
	add(StepMountReady, ToolPgvaultMount, ttfq/3, nan, nan)
	add(StepStart, ToolPgvaultMount, 2*ttfq/3, nan, nan)
	add(StepFirstQuery, ToolPgvault, restoreS+1, nan, nan)
	add(StepRestore, ToolPgvault, restoreS, mb, nan)
	add(StepFirstQuery, ToolPgbackrest, restoreS+2, nan, nan)
	add(StepRestore, ToolPgbackrest, restoreS+1, mb, nan)
	add(StepFirstQuery, ToolPgvaultMountRemote, ttfq*2, nan, nan)
	add(StepMountRead, ToolPgvault, mountReadS, mb, nan)
	add(StepMountRead, ToolRestic, mountReadS*2, mb*1.2, nan)
	add(StepSelectTPS, ToolNative, nan, nan, nativeTPS)
	add(StepSelectTPS, ToolPgvaultMount, nan, nan, mountTPS)
	add(StepFull, ToolPgvault, 10, mb/20, nan)
	add(StepDumpTable, ToolPgvault, dumpS, nan, nan)
	add(StepDumpTable, ToolPgbackrest, restoreS+3, nan, nan)
	r.Fail(StepRestore, ToolRestic, "not run")
	return MountScale{Scale: scale, DataDirMB: mb, Res: r}
}

func TestMountGoalsAndRender(t *testing.T) {
	scales := []MountScale{
		mountScaleFor(100, 1600, 1.2, 8, 6, 20000, 18000, 2.0), // read 267 vs restore 200 MB/s; TPS 90%
		mountScaleFor(300, 4800, 2.0, 24, 60, 20000, 10000, 3.2),
	}
	goals := EvaluateMountGoals(scales)
	want := []string{
		"met", "met", // <= 5 s at each scale
		"not met",        // 2.0 / 1.2 = 1.67x > 1.5x
		"met", "not met", // read: 267/200 met; 80/200 = 40% not met
		"met", "not met", // dump <= 3 s: 2.0 met, 3.2 not met
		"not met",        // dump 3.2 / 2.0 = 1.6x > 1.5x
		"met", "not met", // TPS 90%, 50%
	}
	if len(goals) != len(want) {
		t.Fatalf("%d goals: %+v", len(goals), goals)
	}
	for i, g := range goals {
		if g.Status != want[i] {
			t.Errorf("goal %q: %s (%s), want %s", g.Name, g.Status, g.Detail, want[i])
		}
	}
	rep := &MountReport{Date: time.Unix(0, 0), Machine: "test", Count: 1, Scales: scales, Goals: goals, Reproduce: "make bench", PgbenchSec: 20, WarmupSec: 20, LatencyMS: 30}
	md := rep.Render()
	for _, w := range []string{
		"| **pgvault instant mount**: mount + start + query | 1.20 | 2.00 | 1.67x |",
		"| **pgvault instant mount, every repository request 30 ms slower**: mount + start + query | 2.40 | 4.00 | 1.67x |",
		"| 100 | pgvault browse mount | 1600 | 6.00 | 267 | 133% |",
		"| 300 | 20000 | 10000 | 50% |",
		"scale 300 <= 1.5x scale 100",
		"scale 300, restic, restore (copy out): not run",
		"| **pgvault dump** | 2.00 | 3.20 | 1.60x |",
		"| **pgBackRest** restore + start + pg_dump | 11.0 | 27.0 | 2.45x |",
		"pgBackRest restore + start + pg_dump 27.0 s (pgvault 0.12x)",
	} {
		if !strings.Contains(md, w) {
			t.Errorf("report lacks %q:\n%s", w, md)
		}
	}
	if strings.Contains(md, "quick run") {
		t.Error("scales 100 and 300 called a quick run")
	}
	rep.Scales = []MountScale{scales[0]}
	rep.Goals = EvaluateMountGoals(rep.Scales)
	if md := rep.Render(); !strings.Contains(md, "quick run at scales 100") || len(rep.Goals) != 4 {
		t.Errorf("one scale: %d goals\n%s", len(rep.Goals), md)
	}
}
