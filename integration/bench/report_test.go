package bench

import (
	"bytes"
	"image/png"
	"math"
	"strings"
	"testing"
	"time"
)

func sample(wall, mb float64) Sample {
	s := NewSample()
	s.Wall, s.MB, s.RSSMB = wall, mb, 50
	return s
}

func TestSummarize(t *testing.T) {
	st := Summarize([]float64{3, math.NaN(), 1, 2})
	if st.Median != 2 || st.Min != 1 || st.Max != 3 || st.N != 3 {
		t.Fatalf("%+v", st)
	}
	if st := Summarize([]float64{4, 1}); st.Median != 2.5 {
		t.Fatalf("even count: %+v", st)
	}
	if Summarize(nil).OK() {
		t.Fatal("empty summary is OK")
	}
	if p := Percentile([]float64{5, 1, 4, 2, 3}, 50); p != 3 {
		t.Fatalf("p50 = %v", p)
	}
	if p := Percentile([]float64{5, 1, 4, 2, 3}, 99); p != 5 {
		t.Fatalf("p99 = %v", p)
	}
}

func testResults() *Results {
	r := &Results{}
	for _, x := range []struct {
		step, tool string
		wall, mb   float64
	}{
		{StepFull, ToolPgvault, 3, 80}, {StepFull, ToolPgbackrest, 4, 73}, {StepFull, ToolBasebackup, 2.9, 85},
		{StepIncrChange, ToolPgvault, 1, 5}, {StepIncrChange, ToolPgbackrest, 2, 20}, {StepIncrChange, ToolRestic, 2, 30},
		{StepRestore, ToolPgvault, 2, 1500}, {StepRestore, ToolPgbackrest, 3, 1500},
		{StepFirstQuery, ToolPgvaultMount, 0.5, math.NaN()}, {StepFirstQuery, ToolPgbackrest, 4, math.NaN()},
		{StepIncrBench, ToolPgvault, 4, 90}, {StepIncrBench, ToolPgvaultSynthetic, 3, 10},
		{StepIncrOnePct, ToolPgvault, 4, 5}, {StepIncrOnePct, ToolPgvaultSynthetic, 2, 1},
		{StepWALFetch, ToolPgvault, 0.040, 16.8}, {StepWALFetch, ToolPgbackrest, 0.043, 16.8},
		{StepWALIngest, ToolPgvault, 10, 1074}, {StepWALIngest, ToolReceivewal, 4, 1074},
	} {
		r.Add(x.step, x.tool, sample(x.wall, x.mb))
	}
	// The synthetic backups' server CPU: nothing after pgbench, a
	// backup's worth after the 1% change.
	for step, cpu := range map[string]float64{StepIncrBench: 0, StepIncrOnePct: 0.5} {
		s := sample(1, 1)
		s.ServerCPU = cpu
		r.Add(step, ToolPgvaultSynthetic, s)
	}
	r.Fail(StepFull, ToolBarman, "barman check failed")
	return r
}

func TestGoals(t *testing.T) {
	goals := EvaluateGoals(testResults(), 100)
	want := []string{"met", "not met", "met", "met", "not met",
		"met", "not met", // synthetic wall time after pgbench (0.75x of 1.0x) and after 1% (0.5x of 0.3x)
		"met", "not met", // synthetic server CPU
		"met",     // restore throughput
		"met",     // wal fetch 0.93x
		"not met", // WAL ingest 0.4x of pg_receivewal's rate
		"met"}
	if len(goals) != len(want) {
		t.Fatalf("%d goals", len(goals))
	}
	for i, g := range goals {
		if g.Status != want[i] {
			t.Errorf("goal %q: %s (%s), want %s", g.Name, g.Status, g.Detail, want[i])
		}
	}
}

func TestRenderAndReplace(t *testing.T) {
	r := testResults()
	rep := &Report{Date: time.Unix(0, 0), Machine: "test", Scale: 10, Count: 1, Results: r,
		Goals: EvaluateGoals(r, 10), Chart: "benchmarks.png", Reproduce: "make bench",
		Stream: []StreamRun{{Seconds: 30, Samples: 300, LagP50: 2 << 20, LagP99: 9 << 20, LagMax: 10 << 20, WALMBps: 12, TPS: 900}}}
	md := rep.Render()
	for _, want := range []string{"| full backup | pgvault | 3.00 |", "1.03x time (pg_basebackup)", "0 (1 failed)", "barman check failed", "quick run at scale 10", "2.00 MiB", "stored 5.00 MB, 6.2% of what its full backup stored (80.0 MB"} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
	doc := "# B\n\n<!-- BEGIN go-bench -->\nold go\n<!-- END go-bench -->\n"
	doc = ReplaceSectionText(doc, SectionName, "first")
	doc = ReplaceSectionText(doc, SectionName, "second")
	if strings.Count(doc, "BEGIN "+SectionName) != 1 || !strings.Contains(doc, "second") || strings.Contains(doc, "first") || !strings.Contains(doc, "old go") {
		t.Fatalf("section replace:\n%s", doc)
	}
}

func TestChart(t *testing.T) {
	data, err := RenderChart("title", "sub", ChartGroups(testResults(), ChartSteps))
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if b := img.Bounds(); b.Dx() != chartW || b.Dy() < 200 {
		t.Fatalf("chart is %v", b)
	}
	for r := range glyphs {
		if g := glyph(r); len(g) != glyphH || len(g[0]) != glyphW {
			t.Fatalf("glyph %q is malformed", r)
		}
	}
}

func TestCategorizeTop(t *testing.T) {
	top := `      flat  flat%   sum%        cum   cum%
     1.20s 30.00% 30.00%      1.20s 30.00%  internal/runtime/syscall.Syscall6
     0.80s 20.00% 50.00%      0.80s 20.00%  github.com/klauspost/compress/zstd.(*fastEncoder).Encode
     0.40s 10.00% 60.00%      0.40s 10.00%  crypto/internal/fips140/aes/gcm.gcmAesEnc
     0.40s 10.00% 70.00%      0.40s 10.00%  runtime.memmove
     0.20s  5.00% 75.00%      0.20s  5.00%  github.com/pgvault/pgvault/chunk.(*Splitter).Next`
	cats := CategorizeTop(top)
	if len(cats) != 5 || cats[0].Percent != 30 || !strings.HasPrefix(cats[0].Name, "kernel") {
		t.Fatalf("%+v", cats)
	}
}

func TestParseResultsTable(t *testing.T) {
	r := testResults()
	r.Add(StepFull, ToolPgvault, sample(5, 90))
	r.Add(StepFull, ToolPgvault, sample(4, 85))
	md := (&Report{Results: r, Goals: EvaluateGoals(r, 10)}).Render()
	back := ParseResultsTable(md)
	got, want := back.Get(StepFull, ToolPgvault).Stat(Wall), r.Get(StepFull, ToolPgvault).Stat(Wall)
	if got.Median != want.Median || got.Min != want.Min || got.Max != want.Max {
		t.Fatalf("wall %+v, want %+v", got, want)
	}
	if mb := back.Get(StepFull, ToolPgvault).Stat(MB); mb.Median != 85 {
		t.Fatalf("MB %+v", mb)
	}
	if back.Get(StepFull, ToolBarman) != nil {
		t.Fatal("a row without figures came back")
	}
}

func TestCPUFloor(t *testing.T) {
	r := &Results{}
	add := func(tool string, wall, cpu, server float64) {
		s := sample(wall, 80)
		s.CPU, s.ServerCPU = cpu, server
		r.Add(StepFull, tool, s)
	}
	add(ToolPgvault, 6.5, 7, 4)
	add(ToolPgbackrest, 6.8, 7.5, 0.2)
	rep := &Report{Date: time.Unix(0, 0), Machine: "test", Cores: 2, Results: r}
	md := rep.Render()
	for _, want := range []string{"pgvault: (7.00 + 4.00) / 2 = 5.50 s, 0.81x pgBackRest's wall time (6.80 s)", "pgBackRest: (7.50 + 0.200) / 2 = 3.85 s", "below pgvault's floor"} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
	rep.Cores = 0
	if strings.Contains(rep.Render(), "CPU floor") {
		t.Error("CPU floor without a core count")
	}
}
