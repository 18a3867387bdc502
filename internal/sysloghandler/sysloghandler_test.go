package sysloghandler

import (
	"log/slog"
	"log/syslog"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseAddress(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Address
		err  bool
	}{
		{"/dev/log", Address{"unix", "/dev/log"}, false},
		{"/run/rsyslog/sock", Address{"unix", "/run/rsyslog/sock"}, false},
		{"udp://127.0.0.1:514", Address{"udp", "127.0.0.1:514"}, false},
		{"tcp://logs.example:601", Address{"tcp", "logs.example:601"}, false},
		{"udp://[::1]:514", Address{"udp", "[::1]:514"}, false},
		{"udp://127.0.0.1", Address{}, true},
		{"http://x:1", Address{}, true},
		{"dev/log", Address{}, true},
		{"", Address{}, true},
	} {
		got, err := ParseAddress(tc.in)
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("ParseAddress(%q) = %+v, %v", tc.in, got, err)
		}
	}
}

func TestParseFacility(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want syslog.Priority
		err  bool
	}{{"local2", syslog.LOG_LOCAL2, false}, {"LOCAL7", syslog.LOG_LOCAL7, false}, {"daemon", syslog.LOG_DAEMON, false}, {"local8", 0, true}, {"", 0, true}} {
		got, err := ParseFacility(tc.in)
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("ParseFacility(%q) = %v, %v", tc.in, got, err)
		}
	}
}

// reader returns the next datagram the listener receives.
type reader func(t *testing.T) string

func unixgram(t *testing.T) (Address, reader) {
	path := filepath.Join(t.TempDir(), "log")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return Address{"unix", path}, func(t *testing.T) string { return read(t, conn) }
}

func udp(t *testing.T) (Address, reader) {
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return Address{"udp", conn.LocalAddr().String()}, func(t *testing.T) string { return read(t, conn) }
}

func read(t *testing.T, conn net.Conn) string {
	t.Helper()
	buf := make([]byte, 65536)
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := conn.Read(buf)
	if err != nil {
		t.Fatalf("no syslog line: %v", err)
	}
	return string(buf[:n])
}

func TestHandlerSends(t *testing.T) {
	for name, listen := range map[string]func(*testing.T) (Address, reader){"unixgram": unixgram, "udp": udp} {
		t.Run(name, func(t *testing.T) {
			addr, next := listen(t)
			fac, _ := ParseFacility(DefaultFacility)
			w, err := Dial(addr, fac, "pgvault")
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close()
			log := slog.New(NewHandler(w, slog.LevelInfo)).With("site", "main")
			log.Debug("not sent")
			log.Info("backup taken", "id", "abc123")
			log.WithGroup("repo").Warn("slow", "ms", 1500)
			log.Error("upload failed", "err", "disk full")
			for _, want := range []struct{ pri, text string }{
				{"<150>", `msg="backup taken" site=main id=abc123`},        // local2 (18*8) + info (6)
				{"<148>", `msg=slow site=main repo.ms=1500`},               // warning (4)
				{"<147>", `msg="upload failed" site=main err="disk full"`}, // err (3)
			} {
				line := next(t)
				if !strings.HasPrefix(line, want.pri) || !strings.Contains(line, " pgvault[") || !strings.HasSuffix(strings.TrimSuffix(line, "\n"), "]: "+want.text) {
					t.Fatalf("got  %q\nwant %s...pgvault[pid]: %s", line, want.pri, want.text)
				}
				if strings.Contains(line, "level=") || strings.Contains(line, "time=") {
					t.Fatalf("level or time repeated in %q", line)
				}
			}
		})
	}
}

func TestDialMissingSocket(t *testing.T) {
	fac, _ := ParseFacility("local2")
	path := filepath.Join(t.TempDir(), "nothing")
	if _, err := Dial(Address{"unix", path}, fac, "pgvault"); err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("dial of a missing socket: %v", err)
	}
}
