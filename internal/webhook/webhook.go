package webhook

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// SignatureHeader carries "sha256=" and the hex HMAC-SHA256 of the body
// keyed with the shared secret.
const SignatureHeader = "X-Pgvault-Signature"

// Formats of the body.
const (
	FormatJSON  = "json"  // the Event as JSON
	FormatSlack = "slack" // {"text": "..."}: Slack, Mattermost, Rocket.Chat incoming webhooks
)

// Event kinds.
const (
	Raised  = "raised"
	Cleared = "cleared"
)

// Event is one alert starting or ending.
type Event struct {
	Event   string    `json:"event"` // Raised or Cleared
	Site    string    `json:"site"`
	Alert   string    `json:"alert"`
	Message string    `json:"message"`
	Time    time.Time `json:"time"`
	Host    string    `json:"host"`
}

// Sign is the value of SignatureHeader for body.
func Sign(secret, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// Verify reports whether header is body's signature with secret (in
// constant time): what a receiver does.
func Verify(secret, body []byte, header string) bool {
	return hmac.Equal([]byte(header), []byte(Sign(secret, body)))
}

// Body encodes ev in format.
func Body(format string, ev Event) ([]byte, error) {
	if format == FormatSlack {
		verb := "raised"
		if ev.Event == Cleared {
			verb = "cleared"
		}
		text := fmt.Sprintf("pgvault on %s: alert %s %s on site %s", ev.Host, ev.Alert, verb, ev.Site)
		if ev.Message != "" {
			text += ": " + ev.Message
		}
		return json.Marshal(map[string]string{"text": text})
	}
	return json.Marshal(ev)
}

// Options configure a Notifier.
type Options struct {
	URL    string
	Secret []byte // nil: no signature header
	Format string // FormatJSON ("") or FormatSlack
	// Timeout bounds one POST (default 10s).
	Timeout time.Duration
	// Attempts is how many times an event is posted before it is dropped
	// (default 5); Backoff the first wait between attempts, doubled each
	// time (default 1s).
	Attempts int
	Backoff  time.Duration
	// Queue is how many events may wait (default 100); more are dropped
	// and logged.
	Queue int
	// Client posts the events (default: a new http.Client).
	Client *http.Client
	Logger *slog.Logger
}

// Notifier posts events in the background. Safe for concurrent use.
type Notifier struct {
	opts  Options
	where string // the URL without path and query, for logs
	queue chan Event

	ctx       context.Context // ends deliveries when Close gives up waiting
	cancel    context.CancelFunc
	closeOnce sync.Once
	stop      chan struct{}
	done      chan struct{}
}

// New checks the options and starts the notifier's goroutine; Close
// stops it.
func New(opts Options) (*Notifier, error) {
	u, err := url.Parse(opts.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, errors.New("webhook url: use an http:// or https:// URL")
	}
	switch opts.Format {
	case "":
		opts.Format = FormatJSON
	case FormatJSON, FormatSlack:
	default:
		return nil, fmt.Errorf("webhook format %q: use json or slack", opts.Format)
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 10 * time.Second
	}
	if opts.Attempts <= 0 {
		opts.Attempts = 5
	}
	if opts.Backoff <= 0 {
		opts.Backoff = time.Second
	}
	if opts.Queue <= 0 {
		opts.Queue = 100
	}
	if opts.Client == nil {
		opts.Client = &http.Client{}
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	n := &Notifier{opts: opts, where: u.Scheme + "://" + u.Host, queue: make(chan Event, opts.Queue),
		stop: make(chan struct{}), done: make(chan struct{})}
	n.ctx, n.cancel = context.WithCancel(context.Background())
	go n.run()
	return n, nil
}

// Notify queues ev; it never blocks. It reports false when the queue is
// full and ev was dropped.
func (n *Notifier) Notify(ev Event) bool {
	select {
	case n.queue <- ev:
		return true
	default:
		n.opts.Logger.Error("webhook queue full; event dropped", "webhook", n.where, "site", ev.Site, "alert", ev.Alert, "event", ev.Event)
		return false
	}
}

// Close delivers what is queued, waiting at most until ctx ends (then
// the rest is dropped), and stops the goroutine. Notify must not be
// called after Close.
func (n *Notifier) Close(ctx context.Context) {
	n.closeOnce.Do(func() { close(n.stop) })
	select {
	case <-n.done:
	case <-ctx.Done():
		n.cancel()
		<-n.done
	}
	n.cancel()
}

func (n *Notifier) run() {
	defer close(n.done)
	ctx := n.ctx
	for {
		select {
		case ev := <-n.queue:
			n.deliver(ctx, ev)
		case <-n.stop:
			for {
				select {
				case ev := <-n.queue:
					if ctx.Err() == nil {
						n.deliver(ctx, ev)
					}
				default:
					return
				}
			}
		}
	}
}

// deliver posts ev until it is accepted, a permanent error, or the
// attempts run out.
func (n *Notifier) deliver(ctx context.Context, ev Event) {
	body, err := Body(n.opts.Format, ev)
	if err != nil {
		n.opts.Logger.Error("webhook: cannot encode the event", "err", err)
		return
	}
	wait := n.opts.Backoff
	for attempt := 1; ; attempt++ {
		err := n.post(ctx, body)
		if err == nil {
			n.opts.Logger.Debug("webhook delivered", "webhook", n.where, "site", ev.Site, "alert", ev.Alert, "event", ev.Event)
			return
		}
		var perm *permanentError
		if errors.As(err, &perm) || attempt >= n.opts.Attempts {
			n.opts.Logger.Error("webhook not delivered; event dropped", "webhook", n.where, "site", ev.Site, "alert", ev.Alert,
				"event", ev.Event, "attempts", attempt, "err", err)
			return
		}
		n.opts.Logger.Warn("webhook failed; retrying", "webhook", n.where, "site", ev.Site, "alert", ev.Alert,
			"attempt", attempt, "retry_in", wait, "err", err)
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return
		}
		wait *= 2
	}
}

// permanentError is an answer that retrying will not change (4xx).
type permanentError struct{ status string }

func (e *permanentError) Error() string { return "refused: " + e.status }

func (n *Notifier) post(ctx context.Context, body []byte) error {
	ctx, cancel := context.WithTimeout(ctx, n.opts.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, n.opts.URL, bytes.NewReader(body))
	if err != nil {
		return &permanentError{status: "bad request: " + scrub(err).Error()}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "pgvault-agent")
	if len(n.opts.Secret) > 0 {
		req.Header.Set(SignatureHeader, Sign(n.opts.Secret, body))
	}
	resp, err := n.opts.Client.Do(req)
	if err != nil {
		return scrub(err)
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // lets the connection be reused
	resp.Body.Close()
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		return nil
	case resp.StatusCode == http.StatusRequestTimeout || resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500:
		return fmt.Errorf("answered %s", resp.Status)
	default:
		return &permanentError{status: resp.Status}
	}
}

// scrub drops the URL net/http puts in its errors (`Post "https://...":`):
// its path may be the webhook's token.
func scrub(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		msg := ue.Err.Error()
		if ue.Timeout() && !strings.Contains(msg, "timeout") {
			msg = "timeout: " + msg
		}
		return errors.New(msg)
	}
	return err
}
