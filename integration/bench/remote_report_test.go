package bench

import (
	"math"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseProgress(t *testing.T) {
	for _, c := range []struct {
		name, out string
		want      []float64
	}{
		{"pgbench 15", "starting vacuum...end.\nprogress: 5.0 s, 1234.5 tps, lat 1.620 ms stddev 0.412\nprogress: 10.0 s, 2000.0 tps, lat 1.0 ms stddev 0.2\n", []float64{1234.5, 2000}},
		{"pgbench 17, failures column", "progress: 5.0 s, 812.2 tps, lat 2.4 ms stddev 0.9, 0 failed\n", []float64{812.2}},
		{"a window with no transaction", "progress: 5.0 s, 0.0 tps, lat 0.000 ms stddev 0.000\nprogress: 10.0 s, 15.2 tps, lat 130 ms stddev 9\n", []float64{0, 15.2}},
		{"summary lines are not windows", "tps = 1500.1 (without initial connection time)\nlatency average = 1.3 ms\n", nil},
		{"garbled", "progress: soon\nprogress: 5.0 s, many tps, lat\n", nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := ParseProgress(c.out); !slices.Equal(got, c.want) {
				t.Fatalf("got %v, want %v", got, c.want)
			}
		})
	}
}

// remoteRun is one round of a run whose every window has tps.
func remoteRun(first float64, tps ...float64) RemoteRun {
	return RemoteRun{FirstQuery: first, Windows: tps}
}

func TestRemoteReportGoals(t *testing.T) {
	nan := math.NaN()
	orig := []float64{500, 1000, 2000, 2000, 2000, 2000}
	rep := &RemoteReport{Date: time.Unix(0, 0), Machine: "test", Scale: 100, Count: 1, Seconds: 30, WindowSec: 5, Clients: 2, LatencyMS: 30,
		Runs: map[string][]RemoteRun{
			RemoteOriginal: {remoteRun(nan, orig...)},
			RemoteFile:     {remoteRun(0.5, 900, 1900, 2100, 2100, 2100, 2100)},
			// At 0 ms: 80% in every window from 10 s on but one (75%).
			RemoteS3: {remoteRun(0.6, 100, 800, 1700, 1500, 1700, 1800)},
			// At 30 ms: exactly half from 10 s on.
			RemoteS3Slow: {remoteRun(0.9, 10, 200, 1000, 1000, 1000, 1000)},
		}}
	got := map[string]string{}
	for _, g := range rep.Goals() {
		got[g.Name] = g.Status + ": " + g.Detail
	}
	want := map[string]string{
		"instant mount from S3, every request 30 ms slower: first query <= 1.0 s":                                                                                           "met: 0.900 s",
		"instant mount from S3, every request 30 ms slower: pgbench -S TPS from the 10th second to the end >= 50% of the original cluster's cold TPS over the same seconds": "met: 1000 vs 2000 TPS: 50% (worst 5-second window: 50% of the original's in the same window)",
		"instant mount from S3, no added latency: pgbench -S TPS from the 10th second to the end >= 80% of the original cluster's cold TPS over the same seconds":           "met: 1675 vs 2000 TPS: 84% (worst 5-second window: 75% of the original's in the same window)",
	}
	for name, w := range want {
		if got[name] != w {
			t.Errorf("goal %q:\n got %q\nwant %q", name, got[name], w)
		}
	}

	// Below the limit on average: not met.
	rep.Runs[RemoteS3] = []RemoteRun{remoteRun(0.6, 100, 800, 1500, 1500, 1600, 1700)}
	for _, g := range rep.Goals() {
		if strings.Contains(g.Name, "no added latency") && g.Status != "not met" {
			t.Errorf("goal %q at 79%%: %s (%s)", g.Name, g.Status, g.Detail)
		}
	}
	rep.Runs[RemoteS3] = []RemoteRun{remoteRun(0.6, 100, 800, 1700, 1500, 1700, 1800)}

	// A missing window is "not measured", never a verdict.
	rep.Runs[RemoteS3Slow] = []RemoteRun{{Err: "mount failed"}}
	for _, g := range rep.Goals() {
		if strings.Contains(g.Name, "30 ms") && g.Status != "not measured" {
			t.Errorf("goal %q with no figures: %s", g.Name, g.Status)
		}
	}
	md := rep.Render()
	for _, want := range []string{
		"| run | first query s | 0-5 s | 5-10 s | 10-15 s | 15-20 s | 20-25 s | 25-30 s | mean from 10 s | / original |",
		"| original cluster, restarted cold | - | 500 | 1000 | 2000 | 2000 | 2000 | 2000 | 2000 | 100% |",
		"| instant mount, S3 (MinIO) | 0.600 | 100 | 800 | 1700 | 1500 | 1700 | 1800 | 1675 | 84% |",
		"| instant mount, S3 (MinIO), every request 30 ms slower | - | - | - | - | - | - | - | - | - |",
		"- instant mount, S3 (MinIO), every request 30 ms slower, round 1: mount failed",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
	if strings.Contains(md, "quick run") {
		t.Error("scale 100 called a quick run")
	}
}
