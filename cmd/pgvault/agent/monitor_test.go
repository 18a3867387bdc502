package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"

	"github.com/pgvault/pgvault/internal/webhook"
)

// captureHandler keeps the text of every record, with its attributes.
type captureHandler struct {
	mu    *sync.Mutex
	lines *[]string
	attrs string
}

func newCapture() *captureHandler { return &captureHandler{mu: &sync.Mutex{}, lines: &[]string{}} }

func (c *captureHandler) Enabled(context.Context, slog.Level) bool { return true }
func (c *captureHandler) Handle(_ context.Context, r slog.Record) error {
	line := r.Message + c.attrs
	r.Attrs(func(a slog.Attr) bool { line += " " + a.String(); return true })
	c.mu.Lock()
	*c.lines = append(*c.lines, line)
	c.mu.Unlock()
	return nil
}
func (c *captureHandler) WithAttrs(as []slog.Attr) slog.Handler {
	d := *c
	for _, a := range as {
		d.attrs += " " + a.String()
	}
	return &d
}
func (c *captureHandler) WithGroup(name string) slog.Handler {
	d := *c
	d.attrs += " [" + name + "]"
	return &d
}
func (c *captureHandler) got() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(*c.lines)
}

func TestTeeReachesLoggersMadeBeforeTheSink(t *testing.T) {
	base := newCapture()
	var level slog.LevelVar
	level.Set(slog.LevelInfo)
	tee := newTee(levelled{base, &level})
	siteLog := slog.New(tee).With("site", "main").WithGroup("g")
	siteLog.Info("before", "k", 1)
	sink := newCapture()
	tee.setSink(sink)
	siteLog.Info("after", "k", 2)
	siteLog.Debug("below the level")
	tee.setSink(nil)
	siteLog.Info("off again")
	want := []string{"after site=main [g] k=2"}
	if got := sink.got(); !slices.Equal(got, want) {
		t.Fatalf("sink got %q, want %q", got, want)
	}
	if got := base.got(); len(got) != 3 {
		t.Fatalf("base got %q", got)
	}
}

// levelled filters a handler by a level.
type levelled struct {
	slog.Handler
	level slog.Leveler
}

func (l levelled) Enabled(_ context.Context, lv slog.Level) bool { return lv >= l.level.Level() }
func (l levelled) WithAttrs(as []slog.Attr) slog.Handler {
	return levelled{l.Handler.WithAttrs(as), l.level}
}
func (l levelled) WithGroup(name string) slog.Handler {
	return levelled{l.Handler.WithGroup(name), l.level}
}

// testMetrics is a registry with the figures of one site set.
func testMetrics() *Metrics {
	m := NewMetrics("test")
	m.initSite("main")
	m.walLag.WithLabelValues("main").Set(4096)
	m.backups.WithLabelValues("main").Set(2)
	m.uploadErrors.WithLabelValues("main").Add(3)
	m.SetAlert("main", AlertWALGap, true)
	return m
}

func TestExportStatsd(t *testing.T) {
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	port := conn.LocalAddr().(*net.UDPAddr).Port
	m := testMetrics()
	e := &exporter{log: slog.New(slog.DiscardHandler), metrics: m, host: "db1", counters: map[string]float64{}, failing: map[string]string{}}
	defer e.close()
	for _, tc := range []struct {
		format string
		want   []string
	}{
		{"telegraf", []string{
			"pgvault.wal_lag_bytes,env=prod,site=main:4096|g",
			"pgvault.backups,env=prod,site=main:2|g",
			"pgvault.upload_errors,env=prod,site=main:3|c",
			"pgvault.alert,env=prod,site=main,alert=wal_gap:1|g",
			"pgvault.alert,env=prod,site=main,alert=drill_failed:0|g",
		}},
		{"datadog", []string{
			"pgvault.wal_lag_bytes:4096|g|#env:prod,site:main",
			"pgvault.upload_errors:1|c|#env:prod,site:main", // one more since the first round
			"pgvault.alert:1|g|#env:prod,site:main,alert:wal_gap",
		}},
	} {
		t.Run(tc.format, func(t *testing.T) {
			if tc.format == "datadog" {
				m.uploadErrors.WithLabelValues("main").Inc()
			}
			cfg := &Config{Statsd: &Statsd{Host: "127.0.0.1", Port: port, Format: tc.format, Tags: map[string]string{"env": "prod"}}}
			e.export(context.Background(), cfg)
			lines := map[string]bool{}
			buf := make([]byte, 65536)
			conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			for !containsAll(lines, tc.want) {
				n, err := conn.Read(buf)
				if err != nil {
					t.Fatalf("lines so far %v: %v", lines, err)
				}
				for _, l := range strings.Split(string(buf[:n]), "\n") {
					lines[l] = true
				}
			}
			for l := range lines {
				if strings.HasPrefix(l, "go_") || strings.HasPrefix(l, "process_") || strings.Contains(l, "go.") {
					t.Fatalf("runtime metric sent to statsd: %q", l)
				}
			}
		})
	}
}

func containsAll(set map[string]bool, want []string) bool {
	for _, w := range want {
		if !set[w] {
			return false
		}
	}
	return true
}

func TestExportPushgateway(t *testing.T) {
	type push struct {
		method, path string
		families     map[string]bool
		lag          float64
	}
	got := make(chan push, 10)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := push{method: r.Method, path: r.URL.Path, families: map[string]bool{}}
		dec := expfmt.NewDecoder(r.Body, expfmt.ResponseFormat(r.Header))
		for {
			var mf dto.MetricFamily
			if err := dec.Decode(&mf); err != nil {
				break
			}
			p.families[mf.GetName()] = true
			if mf.GetName() == "pgvault_wal_lag_bytes" {
				p.lag = mf.GetMetric()[0].GetGauge().GetValue()
			}
		}
		got <- p
		w.WriteHeader(http.StatusOK)
	}))
	defer srv.Close()
	var logs bytes.Buffer
	e := &exporter{log: slog.New(slog.NewTextHandler(&logs, nil)), metrics: testMetrics(), host: "db1", counters: map[string]float64{}, failing: map[string]string{}}
	e.export(context.Background(), &Config{Pushgateway: &Pushgateway{Endpoint: srv.URL, Tags: map[string]string{"dc": "eu1"}}})
	select {
	case p := <-got:
		// The client library writes the grouping labels in map order.
		if p.method != http.MethodPut || (p.path != "/metrics/job/pgvault/instance/db1/dc/eu1" && p.path != "/metrics/job/pgvault/dc/eu1/instance/db1") {
			t.Fatalf("push %s %s", p.method, p.path)
		}
		if !p.families["pgvault_backups"] || !p.families["pgvault_alert"] || p.families["go_goroutines"] || p.lag != 4096 {
			t.Fatalf("pushed %v (lag %v)", p.families, p.lag)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("nothing pushed")
	}
	// A Pushgateway that is gone is logged once, not every round.
	srv.Close()
	for range 3 {
		e.export(context.Background(), &Config{Pushgateway: &Pushgateway{Endpoint: srv.URL}})
	}
	if n := strings.Count(logs.String(), "cannot send metrics to the Pushgateway"); n != 1 {
		t.Fatalf("%d warnings for 3 failed pushes:\n%s", n, logs.String())
	}
}

func TestOutputsWebhookFollowsAlerts(t *testing.T) {
	type hook struct {
		ev  webhook.Event
		sig string
	}
	got := make(chan hook, 10)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var ev webhook.Event
		json.Unmarshal(body, &ev)
		if !webhook.Verify([]byte("k3y"), body, r.Header.Get(webhook.SignatureHeader)) {
			ev.Message = "BAD SIGNATURE"
		}
		got <- hook{ev, r.Header.Get(webhook.SignatureHeader)}
	}))
	defer srv.Close()
	log := slog.New(slog.DiscardHandler)
	o := &outputs{tee: newTee(slog.DiscardHandler), log: log}
	defer o.close()
	cfg := &Config{SyslogAddress: "/dev/log", SyslogFacility: "local2", Webhook: &Webhook{URL: srv.URL, Secret: "k3y", Format: "json", Timeout: Duration{time.Second}}}
	if err := o.apply(cfg, true); err != nil {
		t.Fatal(err)
	}
	al, err := NewAlerts(filepath.Join(t.TempDir(), "alerts"), nil, log)
	if err != nil {
		t.Fatal(err)
	}
	al.OnChange(func(a Alert, active bool) { o.notify(alertEvent(a, active, "db1", time.Now())) })
	al.Raise("main", AlertWALGap, "wal check", "2 segments missing")
	al.Raise("main", AlertWALGap, "wal check", "2 segments missing") // no second event
	al.Clear("main", AlertWALGap, "wal check")
	for _, want := range []struct{ event, msg string }{{"raised", "2 segments missing"}, {"cleared", "2 segments missing"}} {
		select {
		case h := <-got:
			if h.ev.Event != want.event || h.ev.Site != "main" || h.ev.Alert != AlertWALGap || h.ev.Message != want.msg || h.ev.Host != "db1" || h.ev.Time.IsZero() {
				t.Fatalf("event %+v, want %s %q", h.ev, want.event, want.msg)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no %s event", want.event)
		}
	}
	// A reload without the webhook stops the events.
	cfg.Webhook = nil
	if err := o.apply(cfg, false); err != nil {
		t.Fatal(err)
	}
	al.Raise("main", AlertDrillFailed, "drill", "boot failed")
	o.close()
	select {
	case h := <-got:
		t.Fatalf("event after the webhook was removed: %+v", h.ev)
	default:
	}
}

func TestOutputsSyslogAtStartIsStrict(t *testing.T) {
	o := &outputs{tee: newTee(slog.DiscardHandler), log: slog.New(slog.DiscardHandler)}
	defer o.close()
	missing := filepath.Join(t.TempDir(), "no-syslog")
	cfg := &Config{Syslog: true, SyslogAddress: missing, SyslogFacility: "local2"}
	if err := o.apply(cfg, true); err == nil || !strings.Contains(err.Error(), "syslog_address") || !strings.Contains(err.Error(), missing) {
		t.Fatalf("start with no syslog daemon: %v", err)
	}
	if err := o.apply(cfg, false); err != nil {
		t.Fatalf("a reload logs instead: %v", err)
	}
}
