package agent

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pgvault/pgvault/repo/backend"
	"github.com/pgvault/pgvault/repo/backend/faulty"
	"github.com/pgvault/pgvault/repo/backend/mem"
	"github.com/pgvault/pgvault/repo/backend/retry"
)

// testSite is a site wired to alerts and metrics, without goroutines.
func testSite(t *testing.T, clock Clock) *site {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	alerts, err := NewAlerts(t.TempDir(), clock, log)
	if err != nil {
		t.Fatal(err)
	}
	a := &Agent{log: log, clock: clock, alerts: alerts, metrics: NewMetrics("test"), cfg: &Config{}}
	cfg := &Site{Name: "main", UploadRetriesWarningLimit: 3, Mode: "stream"}
	s, err := newSite(a, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestUploadRetriesWarning drives the retry wrapper over a backend whose
// uploads fail, then recover: the alert starts at the third failed
// attempt (upload_retries_warning_limit), the give-up is counted, and the
// next successful upload ends the alert.
func TestUploadRetriesWarning(t *testing.T) {
	t0 := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	clock := &fakeClock{t: t0}
	s := testSite(t, clock)
	bad := faulty.New(mem.New(), faulty.Options{Error: 1, Seed: 1})
	opts := s.retryOptions()
	opts.MaxAttempts = 5
	opts.Sleep = func(context.Context, time.Duration) error { return nil }
	be := retry.New(s.service().Wrap(bad), opts)
	h := backend.Handle{Type: backend.PackFile, Name: "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"}

	steps := []struct {
		name           string
		faults         bool
		wantErr        bool
		alert          bool
		errors, retrys float64
	}{
		{"failing upload", true, true, true, 1, 4},
		{"still failing: counted again, alert stays", true, true, true, 2, 8},
		{"storage back: the alert ends", false, false, false, 2, 8},
	}
	for _, st := range steps {
		bad.SetEnabled(st.faults)
		err := be.Save(context.Background(), h, []byte("pack"))
		if (err != nil) != st.wantErr {
			t.Fatalf("%s: Save error %v", st.name, err)
		}
		if got := s.a.alerts.IsActive("main", AlertUploadRetries); got != st.alert {
			t.Fatalf("%s: alert active %v, want %v", st.name, got, st.alert)
		}
		if got := testutil.ToFloat64(s.a.metrics.uploadErrors.WithLabelValues("main")); got != st.errors {
			t.Fatalf("%s: pgvault_upload_errors_total %v, want %v", st.name, got, st.errors)
		}
		if got := testutil.ToFloat64(s.a.metrics.uploadRetries.WithLabelValues("main")); got != st.retrys {
			t.Fatalf("%s: pgvault_upload_retries_total %v, want %v", st.name, got, st.retrys)
		}
		if st.alert {
			al := s.a.alerts.Active("main")[0]
			if !strings.Contains(al.Message, "save of pack") || !al.Since.Equal(t0) { // since the first failure
				t.Fatalf("%s: alert %+v", st.name, al)
			}
		}
		clock.advance(time.Minute)
	}
	if s.snapshot().Uploads.Errors != 2 {
		t.Fatalf("state: %+v", s.snapshot().Uploads)
	}
}

func TestIdentityMismatch(t *testing.T) {
	s := testSite(t, realClock{})
	n := node{name: "db1 port 5432 as user \"pgvault\""}
	tests := []struct {
		name     string
		repo     repoIdentity
		sys      string
		major    int
		mismatch bool
	}{
		{"empty repository: anything goes", repoIdentity{}, "7", 15, false},
		{"same cluster", repoIdentity{"7", 15}, "7", 15, false},
		{"another cluster", repoIdentity{"7", 15}, "8", 15, true},
		{"upgraded (new system, new major)", repoIdentity{"7", 15}, "9", 16, true},
		{"major differs", repoIdentity{"7", 15}, "7", 16, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s.repoIdentity = tc.repo
			msg := s.identityMismatch(n, tc.sys, tc.major)
			if (msg != "") != tc.mismatch {
				t.Fatalf("identityMismatch = %q", msg)
			}
			if tc.mismatch && !strings.Contains(msg, "sites.main.repo") {
				t.Fatalf("no fix in %q", msg)
			}
		})
	}
}

// TestCleanAlerts: alerts whose sources the configuration no longer has
// end on (re)configuration; the others stay.
func TestCleanAlerts(t *testing.T) {
	s := testSite(t, realClock{})
	s.cfg.PG = Nodes{"host=db1 user=pgvault"}
	s.nodeList, _ = parseNodes(s.cfg)
	al := s.a.alerts
	al.Raise("main", AlertDrillFailed, "drill", "drill failed")
	al.Raise("main", AlertAuthentication, "postgres gone-node port 5432 as user \"x\"", "bad password")
	al.Raise("main", AlertAuthentication, s.nodeList[0].source(), "bad password")
	al.Raise("main", AlertWALGap, "wal check", "gap")
	s.cleanAlerts() // drills are off in this configuration
	var got []string
	for _, a := range al.Active("main") {
		got = append(got, a.Name+" "+strings.Join(a.Sources, ","))
	}
	want := []string{AlertAuthentication + " " + s.nodeList[0].source(), AlertWALGap + " wal check"}
	if strings.Join(got, ";") != strings.Join(want, ";") {
		t.Fatalf("after cleanAlerts: %v, want %v", got, want)
	}
}
