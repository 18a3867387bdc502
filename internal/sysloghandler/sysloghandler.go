package sysloghandler

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"log/syslog"
	"net"
	"net/url"
	"strings"
	"sync"
)

// DefaultAddress and DefaultFacility are pghoard's defaults.
const (
	DefaultAddress  = "/dev/log"
	DefaultFacility = "local2"
)

var facilities = map[string]syslog.Priority{
	"kern": syslog.LOG_KERN, "user": syslog.LOG_USER, "mail": syslog.LOG_MAIL, "daemon": syslog.LOG_DAEMON,
	"auth": syslog.LOG_AUTH, "syslog": syslog.LOG_SYSLOG, "lpr": syslog.LOG_LPR, "news": syslog.LOG_NEWS,
	"uucp": syslog.LOG_UUCP, "cron": syslog.LOG_CRON, "authpriv": syslog.LOG_AUTHPRIV, "ftp": syslog.LOG_FTP,
	"local0": syslog.LOG_LOCAL0, "local1": syslog.LOG_LOCAL1, "local2": syslog.LOG_LOCAL2, "local3": syslog.LOG_LOCAL3,
	"local4": syslog.LOG_LOCAL4, "local5": syslog.LOG_LOCAL5, "local6": syslog.LOG_LOCAL6, "local7": syslog.LOG_LOCAL7,
}

// ParseFacility maps a facility name (local0..local7, daemon, user, ...)
// to its priority bits.
func ParseFacility(name string) (syslog.Priority, error) {
	if p, ok := facilities[strings.ToLower(name)]; ok {
		return p, nil
	}
	return 0, fmt.Errorf("syslog facility %q: use local0 to local7, daemon, user, syslog, auth, authpriv, cron, kern, lpr, mail, news, uucp or ftp", name)
}

// Address is where syslog listens: a network ("unix", "udp" or "tcp")
// and its address.
type Address struct {
	Network string
	Addr    string
}

// ParseAddress reads a syslog_address: a unix socket path (/dev/log),
// udp://host:port or tcp://host:port.
func ParseAddress(s string) (Address, error) {
	if strings.HasPrefix(s, "/") {
		return Address{Network: "unix", Addr: s}, nil
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "udp" && u.Scheme != "tcp") || u.Host == "" || (u.Path != "" && u.Path != "/") {
		return Address{}, fmt.Errorf("syslog address %q: use a unix socket path such as /dev/log, udp://host:port or tcp://host:port", s)
	}
	if _, port, err := net.SplitHostPort(u.Host); err != nil || port == "" {
		return Address{}, fmt.Errorf("syslog address %q: give the port (syslog's is 514)", s)
	}
	return Address{Network: u.Scheme, Addr: u.Host}, nil
}

// Dial connects to syslog at a, with facility and tag (the program name
// in every line). A unix socket is tried as a datagram socket, then as a
// stream socket, as syslog(3) does.
func Dial(a Address, facility syslog.Priority, tag string) (*syslog.Writer, error) {
	pri := facility | syslog.LOG_INFO
	if a.Network != "unix" {
		w, err := syslog.Dial(a.Network, a.Addr, pri, tag)
		if err != nil {
			return nil, fmt.Errorf("syslog %s://%s: %w", a.Network, a.Addr, err)
		}
		return w, nil
	}
	w, err := syslog.Dial("unixgram", a.Addr, pri, tag)
	if err == nil {
		return w, nil
	}
	w, err2 := syslog.Dial("unix", a.Addr, pri, tag)
	if err2 == nil {
		return w, nil
	}
	return nil, fmt.Errorf("syslog %s: %w", a.Addr, err)
}

// Handler is a slog.Handler writing to a syslog.Writer. Safe for
// concurrent use; handlers derived by WithAttrs and WithGroup share the
// writer.
type Handler struct {
	w     *syslog.Writer
	level slog.Leveler
	out   *output
	text  slog.Handler // formats into out.buf
}

// output is the buffer the text handler formats one record into.
type output struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (o *output) Write(p []byte) (int, error) { return o.buf.Write(p) }

// NewHandler writes records at level or above (nil: Info) to w.
func NewHandler(w *syslog.Writer, level slog.Leveler) *Handler {
	if level == nil {
		level = slog.LevelInfo
	}
	out := &output{}
	text := slog.NewTextHandler(out, &slog.HandlerOptions{
		Level: slog.LevelDebug, // Enabled below decides
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			// syslog stamps the time and carries the level as severity.
			if len(groups) == 0 && (a.Key == slog.TimeKey || a.Key == slog.LevelKey) {
				return slog.Attr{}
			}
			return a
		},
	})
	return &Handler{w: w, level: level, out: out, text: text}
}

// Enabled implements slog.Handler.
func (h *Handler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level.Level() }

// Handle implements slog.Handler.
func (h *Handler) Handle(ctx context.Context, r slog.Record) error {
	h.out.mu.Lock()
	h.out.buf.Reset()
	err := h.text.Handle(ctx, r)
	msg := strings.TrimSuffix(h.out.buf.String(), "\n")
	h.out.mu.Unlock()
	if err != nil {
		return err
	}
	switch {
	case r.Level >= slog.LevelError:
		return h.w.Err(msg)
	case r.Level >= slog.LevelWarn:
		return h.w.Warning(msg)
	case r.Level >= slog.LevelInfo:
		return h.w.Info(msg)
	default:
		return h.w.Debug(msg)
	}
}

// WithAttrs implements slog.Handler.
func (h *Handler) WithAttrs(attrs []slog.Attr) slog.Handler {
	c := *h
	c.text = h.text.WithAttrs(attrs)
	return &c
}

// WithGroup implements slog.Handler.
func (h *Handler) WithGroup(name string) slog.Handler {
	c := *h
	c.text = h.text.WithGroup(name)
	return &c
}

var _ slog.Handler = (*Handler)(nil)
