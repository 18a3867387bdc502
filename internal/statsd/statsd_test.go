package statsd

import (
	"context"
	"net"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestAppendLine(t *testing.T) {
	common := []Tag{{"site", "main"}}
	for _, tc := range []struct {
		name   string
		format Format
		metric string
		v      float64
		typ    string
		tags   []Tag
		want   string
	}{
		{"telegraf gauge", Telegraf, "pgvault.wal_lag_bytes", 1024, gauge, nil, "pgvault.wal_lag_bytes,site=main:1024|g"},
		{"telegraf counter with tag", Telegraf, "pgvault.upload_errors", 2, counter, []Tag{{"env", "prod"}}, "pgvault.upload_errors,site=main,env=prod:2|c"},
		{"datadog gauge", DataDog, "pgvault.wal_lag_bytes", 1024, gauge, nil, "pgvault.wal_lag_bytes:1024|g|#site:main"},
		{"datadog counter with tag", DataDog, "pgvault.upload_errors", 2, counter, []Tag{{"env", "prod"}}, "pgvault.upload_errors:2|c|#site:main,env:prod"},
		{"fraction", Telegraf, "t", 1712345678.25, gauge, nil, "t,site=main:1712345678.25|g"},
		{"large value has no exponent", DataDog, "b", 1e15, gauge, nil, "b:1000000000000000|g|#site:main"},
		{"separators in tags are replaced", Telegraf, "x", 1, gauge, []Tag{{"a b", "c,d=e:f|g#h"}}, "x,site=main,a_b=c_d_e_f_g_h:1|g"},
		{"separators in a datadog tag", DataDog, "x", 1, gauge, []Tag{{"k", "v:w,z"}}, "x:1|g|#site:main,k:v_w_z"},
		{"name with separators", Telegraf, "a:b|c", 1, gauge, nil, "a_b_c,site=main:1|g"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := string(AppendLine(nil, tc.format, tc.metric, tc.v, tc.typ, common, tc.tags))
			if got != tc.want {
				t.Fatalf("got  %q\nwant %q", got, tc.want)
			}
		})
	}
}

func TestAppendLineNoTags(t *testing.T) {
	for f, want := range map[Format]string{Telegraf: "n:3|c", DataDog: "n:3|c"} {
		if got := string(AppendLine(nil, f, "n", 3, counter, nil, nil)); got != want {
			t.Errorf("%s: got %q, want %q", f, got, want)
		}
	}
}

func TestParseFormat(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Format
		err  bool
	}{{"", Telegraf, false}, {"telegraf", Telegraf, false}, {"datadog", DataDog, false}, {"graphite", "", true}} {
		got, err := ParseFormat(tc.in)
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("ParseFormat(%q) = %q, %v", tc.in, got, err)
		}
	}
}

// listen opens a UDP socket on 127.0.0.1 and returns it with its address.
func listen(t *testing.T) *net.UDPConn {
	t.Helper()
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// receive reads datagrams until want lines arrived or the deadline.
func receive(t *testing.T, conn *net.UDPConn, want int) (lines []string, datagrams int) {
	t.Helper()
	buf := make([]byte, 65536)
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	for len(lines) < want {
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatalf("after %d of %d lines: %v", len(lines), want, err)
		}
		if n > MaxPacket {
			t.Fatalf("datagram of %d bytes, more than %d", n, MaxPacket)
		}
		datagrams++
		lines = append(lines, strings.Split(string(buf[:n]), "\n")...)
	}
	return lines, datagrams
}

func TestClientSendsOverUDP(t *testing.T) {
	conn := listen(t)
	for _, f := range []Format{Telegraf, DataDog} {
		t.Run(string(f), func(t *testing.T) {
			c, err := Dial(context.Background(), conn.LocalAddr().String(), f, []Tag{{"site", "main"}})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.Gauge("pgvault.backups", 3)
			c.Gauge("pgvault.delta", -2)
			c.Count("pgvault.upload_errors", 1, Tag{"alert", "x"})
			if err := c.Flush(); err != nil {
				t.Fatal(err)
			}
			got, _ := receive(t, conn, 4)
			want := map[Format][]string{
				Telegraf: {"pgvault.backups,site=main:3|g", "pgvault.delta,site=main:0|g", "pgvault.delta,site=main:-2|g", "pgvault.upload_errors,site=main,alert=x:1|c"},
				DataDog:  {"pgvault.backups:3|g|#site:main", "pgvault.delta:0|g|#site:main", "pgvault.delta:-2|g|#site:main", "pgvault.upload_errors:1|c|#site:main,alert:x"},
			}[f]
			if !slices.Equal(got, want) {
				t.Fatalf("received %q\nwant     %q", got, want)
			}
		})
	}
}

func TestClientSplitsDatagrams(t *testing.T) {
	conn := listen(t)
	c, err := Dial(context.Background(), conn.LocalAddr().String(), Telegraf, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const n = 200 // ~40 bytes each: several datagrams
	for i := range n {
		c.Gauge("pgvault.some_long_metric_name_"+strings.Repeat("x", i%7), float64(i))
	}
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	lines, datagrams := receive(t, conn, n)
	if len(lines) != n || datagrams < 2 {
		t.Fatalf("%d lines in %d datagrams", len(lines), datagrams)
	}
	for _, l := range lines {
		if !strings.HasPrefix(l, "pgvault.some_long_metric_name_") || !strings.HasSuffix(l, "|g") {
			t.Fatalf("line split across datagrams: %q", l)
		}
	}
	// Nothing is sent twice.
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
}
