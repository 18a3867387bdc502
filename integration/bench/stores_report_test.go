package bench

import (
	"math"
	"strings"
	"testing"
	"time"
)

// storeRunFor is a store's results with one run of each figure.
func storeRunFor(store, server string, backup, restore, ttfq float64) StoreRun {
	r := &Results{}
	add := func(step, tool string, wall, mb float64) {
		s := NewSample()
		s.Wall, s.MB = wall, mb
		r.Add(step, tool, s)
	}
	nan := math.NaN()
	add(StepFull, ToolPgvault, backup, 75)
	add(StepRestore, ToolPgvault, restore, 1591)
	add(StepFirstQuery, ToolPgvaultMount, ttfq, nan)
	add(StepMountReady, ToolPgvaultMount, ttfq/4, nan)
	return StoreRun{Store: store, Server: server, Res: r}
}

func TestStoreReportRender(t *testing.T) {
	file := storeRunFor(StoreFile, "a folder", 4, 2, 0.4)
	s3 := storeRunFor(StoreS3, "MinIO", 6, 3, 0.5)
	s3.Res.Add(StepFull, ToolPgvault, Sample{Wall: 8, MB: 75})
	s3.Res.Fail(StepRestore, ToolPgvault, "connection refused")
	sftp := StoreRun{Store: StoreSFTP, Server: "OpenSSH", StartErr: "sshd exited during startup", Res: &Results{}}
	rep := &StoreReport{Date: time.Unix(0, 0), Machine: "test", Scale: 100, Count: 2, DataDirMB: 2600,
		Stores: []StoreRun{file, s3, sftp}, Reproduce: "make bench", Headline: "a remark"}
	md := rep.Render()
	for _, want := range []string{
		"## Per store: backup, restore and instant mount on loopback",
		"on the file store the backup stored 75.0 MB and restores 1591 MB",
		"| file | a folder | 4.00 | 1.00x | 2.00 | 1.00x | 0.400 | 1.00x | 0.100 |",
		"| s3 | MinIO | 7.00 (6.00-8.00) | 1.75x | 3.00 | 1.50x | 0.500 | 1.25x | 0.125 |",
		"| sftp | OpenSSH | **server did not start** | - | - | - | - | - | - |",
		"- sftp (OpenSSH): sshd exited during startup",
		"- s3, pgvault, restore (copy out): connection refused",
		"a remark",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
	if strings.Contains(md, "quick run") {
		t.Error("scale 100 called a quick run")
	}
	// Every row of the stores' table has as many cells as its header.
	for _, line := range strings.Split(md, "\n") {
		first, _, _ := strings.Cut(strings.TrimPrefix(line, "| "), " ")
		if !strings.HasPrefix(line, "| ") || (first != "store" && index(StoreOrder, first) == len(StoreOrder)) {
			continue
		}
		if strings.Count(line, "|") != 10 {
			t.Errorf("row with %d bars, want 10: %s", strings.Count(line, "|"), line)
		}
	}

	rep.Scale = 5
	if md := rep.Render(); !strings.Contains(md, "quick run at scale 5") {
		t.Errorf("scale 5 not called a quick run:\n%s", md)
	}
}

// Without a file store that ran there is nothing to divide by: the
// ratios are left out, the figures are not.
func TestStoreReportWithoutBaseline(t *testing.T) {
	file := StoreRun{Store: StoreFile, Server: "a folder", StartErr: "disk full", Res: &Results{}}
	rep := &StoreReport{Date: time.Unix(0, 0), Scale: 100, Stores: []StoreRun{file, storeRunFor(StoreGCS, "fake-gcs-server", 5, 2.5, 0.45)}}
	md := rep.Render()
	if want := "| gs | fake-gcs-server | 5.00 | - | 2.50 | - | 0.450 | - | 0.113 |"; !strings.Contains(md, want) {
		t.Errorf("report lacks %q:\n%s", want, md)
	}
	if !strings.Contains(md, "the backup stored - MB") {
		t.Errorf("the file store's sizes are not shown as missing:\n%s", md)
	}
}
