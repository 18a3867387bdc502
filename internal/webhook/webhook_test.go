package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

type received struct {
	body []byte
	sig  string
	ct   string
}

// server answers each POST with the next status of statuses (200 once
// they run out) and hands every request to the test.
func server(t *testing.T, statuses ...int) (*httptest.Server, chan received) {
	t.Helper()
	got := make(chan received, 100)
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		got <- received{body: body, sig: r.Header.Get(SignatureHeader), ct: r.Header.Get("Content-Type")}
		i := int(n.Add(1)) - 1
		if i < len(statuses) {
			w.WriteHeader(statuses[i])
		}
	}))
	t.Cleanup(srv.Close)
	return srv, got
}

func next(t *testing.T, got chan received) received {
	t.Helper()
	select {
	case r := <-got:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("no request within 10s")
	}
	return received{}
}

// syncBuffer is a log destination the test reads while the notifier writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func newNotifier(t *testing.T, opts Options) (*Notifier, *syncBuffer) {
	t.Helper()
	logs := &syncBuffer{}
	opts.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	if opts.Backoff == 0 {
		opts.Backoff = time.Millisecond
	}
	n, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		n.Close(ctx)
	})
	return n, logs
}

var ev = Event{Event: Raised, Site: "main", Alert: "wal_gap", Message: "2 segments missing", Time: time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC), Host: "db1"}

func TestSignedJSON(t *testing.T) {
	srv, got := server(t)
	secret := []byte("s3cret-hook")
	n, logs := newNotifier(t, Options{URL: srv.URL + "/hook/TOKEN123", Secret: secret})
	n.Notify(ev)
	r := next(t, got)
	if !Verify(secret, r.body, r.sig) || Verify([]byte("other"), r.body, r.sig) {
		t.Fatalf("signature %q does not verify the body %s", r.sig, r.body)
	}
	if r.ct != "application/json" {
		t.Fatalf("Content-Type %q", r.ct)
	}
	var back Event
	if err := json.Unmarshal(r.body, &back); err != nil || back != ev {
		t.Fatalf("body %s decodes to %+v (%v)", r.body, back, err)
	}
	for _, key := range []string{`"event":"raised"`, `"site":"main"`, `"alert":"wal_gap"`, `"message":`, `"time":"2026-12-07T10:00:00Z"`, `"host":"db1"`} {
		if !bytes.Contains(r.body, []byte(key)) {
			t.Fatalf("body %s lacks %s", r.body, key)
		}
	}
	waitLog(t, logs, "webhook delivered")
	if strings.Contains(logs.String(), "TOKEN123") || strings.Contains(logs.String(), string(secret)) {
		t.Fatalf("log holds the URL's path or the secret:\n%s", logs)
	}
}

func TestUnsigned(t *testing.T) {
	srv, got := server(t)
	n, _ := newNotifier(t, Options{URL: srv.URL})
	n.Notify(ev)
	if r := next(t, got); r.sig != "" {
		t.Fatalf("signature %q without a secret", r.sig)
	}
}

func TestSlack(t *testing.T) {
	srv, got := server(t)
	n, _ := newNotifier(t, Options{URL: srv.URL, Format: FormatSlack})
	cleared := ev
	cleared.Event, cleared.Message = Cleared, ""
	n.Notify(ev)
	n.Notify(cleared)
	for _, want := range []string{
		"pgvault on db1: alert wal_gap raised on site main: 2 segments missing",
		"pgvault on db1: alert wal_gap cleared on site main",
	} {
		var body map[string]string
		r := next(t, got)
		if err := json.Unmarshal(r.body, &body); err != nil || len(body) != 1 || body["text"] != want {
			t.Fatalf("body %s, want text %q", r.body, want)
		}
	}
}

func TestRetries(t *testing.T) {
	for _, tc := range []struct {
		name     string
		statuses []int
		requests int    // how many POSTs the server sees
		log      string // the last log line's message
	}{
		{"5xx then success", []int{500, 503}, 3, "webhook delivered"},
		{"429 is retried", []int{429}, 2, "webhook delivered"},
		{"4xx is permanent", []int{400}, 1, "webhook not delivered"},
		{"attempts run out", []int{500, 500, 500}, 3, "webhook not delivered"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, got := server(t, tc.statuses...)
			n, logs := newNotifier(t, Options{URL: srv.URL, Attempts: 3})
			n.Notify(ev)
			for range tc.requests {
				next(t, got)
			}
			waitLog(t, logs, tc.log)
			select {
			case r := <-got:
				t.Fatalf("unexpected extra request %s", r.body)
			default:
			}
		})
	}
}

func TestNotifyNeverBlocks(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	n, logs := newNotifier(t, Options{URL: srv.URL, Queue: 2, Timeout: time.Minute})
	done := make(chan int)
	go func() {
		dropped := 0
		for range 10 {
			if !n.Notify(ev) {
				dropped++
			}
		}
		done <- dropped
	}()
	select {
	case dropped := <-done:
		if dropped < 7 { // one in flight, two queued
			t.Fatalf("%d of 10 dropped with a queue of 2", dropped)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Notify blocked on a hung endpoint")
	}
	waitLog(t, logs, "webhook queue full")
	// Close gives up when its context ends, even with a delivery hung.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	closed := make(chan struct{})
	go func() { n.Close(ctx); close(closed) }()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return after its context ended")
	}
}

func TestNewRefuses(t *testing.T) {
	for _, o := range []Options{{URL: "ftp://x/y"}, {URL: "not a url"}, {URL: "http://h", Format: "xml"}} {
		if n, err := New(o); err == nil {
			n.Close(context.Background())
			t.Errorf("New(%+v) accepted", o)
		}
	}
}

func waitLog(t *testing.T, logs *syncBuffer, msg string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(logs.String(), msg) {
		if time.Now().After(deadline) {
			t.Fatalf("no %q in the log:\n%s", msg, logs)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
