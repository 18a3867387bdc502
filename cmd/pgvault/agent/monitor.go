package agent

import (
	"context"
	"fmt"
	"log/slog"
	"log/syslog"
	"sync"
	"time"

	"github.com/pgvault/pgvault/internal/sysloghandler"
	"github.com/pgvault/pgvault/internal/webhook"
)

// webhookCloseWait is how long a replaced or stopping webhook notifier
// may go on delivering what it has queued.
const webhookCloseWait = 30 * time.Second

// outputs are the monitoring outputs that live across stats rounds: the
// syslog connection and the webhook notifier. apply (at start and on
// every reload) opens, moves or closes them; apply and close are called
// by Run's goroutine only, notify by any.
type outputs struct {
	tee *teeHandler
	log *slog.Logger

	syslogAt  string // "address facility" of the open connection, "" when off
	syslogW   *syslog.Writer
	hookAt    webhookSettings
	closeWait sync.WaitGroup // replaced notifiers draining

	// mu guards hook only, so that notify (called when an alert changes,
	// from any site's goroutine) never waits on a syslog dial.
	mu   sync.Mutex
	hook *webhook.Notifier
}

type webhookSettings struct {
	url, secret, format string
	timeout             time.Duration
}

// apply makes the outputs match cfg. An output that cannot be opened is
// an error at start (strict: the operator asked for it); on a reload the
// error is logged and the running output kept.
func (o *outputs) apply(cfg *Config, strict bool) error {
	if err := o.applySyslog(cfg); err != nil {
		if strict {
			return err
		}
		o.log.Error("syslog not changed", "err", err)
	}
	if err := o.applyWebhook(cfg); err != nil {
		if strict {
			return err
		}
		o.log.Error("webhook not changed", "err", err)
	}
	return nil
}

func (o *outputs) applySyslog(cfg *Config) error {
	at := ""
	if cfg.Syslog {
		at = cfg.SyslogAddress + " " + cfg.SyslogFacility
	}
	if at == o.syslogAt {
		return nil
	}
	var w *syslog.Writer
	if at != "" {
		addr, err := sysloghandler.ParseAddress(cfg.SyslogAddress)
		if err != nil {
			return fmt.Errorf("syslog_address: %w", err)
		}
		fac, err := sysloghandler.ParseFacility(cfg.SyslogFacility)
		if err != nil {
			return fmt.Errorf("syslog_facility: %w", err)
		}
		if w, err = sysloghandler.Dial(addr, fac, "pgvault"); err != nil {
			return fmt.Errorf("syslog_address: %w (is a syslog daemon listening there?)", err)
		}
	}
	if w != nil {
		// The base handler's level (log_level) decides what is logged.
		o.tee.setSink(sysloghandler.NewHandler(w, slog.LevelDebug))
	} else {
		o.tee.setSink(nil)
	}
	if o.syslogW != nil {
		o.syslogW.Close()
	}
	o.syslogW, o.syslogAt = w, at
	if w != nil {
		o.log.Info("logging to syslog too", "syslog_address", cfg.SyslogAddress, "syslog_facility", cfg.SyslogFacility)
	}
	return nil
}

func (o *outputs) applyWebhook(cfg *Config) error {
	var want webhookSettings
	if w := cfg.Webhook; w != nil {
		want = webhookSettings{url: w.URL, secret: w.Secret, format: w.Format, timeout: w.Timeout.D}
	}
	if want == o.hookAt {
		return nil
	}
	var n *webhook.Notifier
	if want.url != "" {
		var secret []byte
		if want.secret != "" {
			secret = []byte(want.secret)
		}
		var err error
		n, err = webhook.New(webhook.Options{URL: want.url, Secret: secret, Format: want.format, Timeout: want.timeout, Logger: o.log})
		if err != nil {
			return err
		}
	}
	o.mu.Lock()
	old := o.hook
	o.hook = n
	o.mu.Unlock()
	o.hookAt = want
	if old != nil {
		// Events already queued still go out, in the background.
		o.closeWait.Add(1)
		go func() {
			defer o.closeWait.Done()
			ctx, cancel := context.WithTimeout(context.Background(), webhookCloseWait)
			defer cancel()
			old.Close(ctx)
		}()
	}
	return nil
}

// notify queues an alert event for the webhook, if one is configured.
func (o *outputs) notify(ev webhook.Event) {
	o.mu.Lock()
	n := o.hook
	o.mu.Unlock()
	if n != nil {
		n.Notify(ev)
	}
}

// close delivers the queued webhook events (for at most webhookCloseWait)
// and closes syslog.
func (o *outputs) close() {
	o.mu.Lock()
	n := o.hook
	o.hook = nil
	o.mu.Unlock()
	o.hookAt = webhookSettings{}
	if n != nil {
		ctx, cancel := context.WithTimeout(context.Background(), webhookCloseWait)
		n.Close(ctx)
		cancel()
	}
	o.closeWait.Wait()
	o.tee.setSink(nil)
	if o.syslogW != nil {
		o.syslogW.Close()
		o.syslogW, o.syslogAt = nil, ""
	}
}

// alertEvent is the webhook event of an alert starting or ending.
func alertEvent(al Alert, active bool, host string, now time.Time) webhook.Event {
	ev := webhook.Event{Event: webhook.Raised, Site: al.Site, Alert: al.Name, Message: al.Message, Time: al.Since, Host: host}
	if !active {
		ev.Event, ev.Time = webhook.Cleared, now.UTC()
	}
	return ev
}
