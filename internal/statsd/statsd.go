package statsd

import (
	"context"
	"fmt"
	"math"
	"net"
	"strconv"
	"strings"
	"sync"
)

// Format is a statsd tag syntax.
type Format string

// The formats pghoard's statsd setting accepts.
const (
	Telegraf Format = "telegraf" // name,tag=value:1|g
	DataDog  Format = "datadog"  // name:1|g|#tag:value
)

// ParseFormat checks a format name ("" is Telegraf, pghoard's default).
func ParseFormat(s string) (Format, error) {
	switch Format(s) {
	case "", Telegraf:
		return Telegraf, nil
	case DataDog:
		return DataDog, nil
	}
	return "", fmt.Errorf("statsd format %q: use telegraf or datadog", s)
}

// Tag is one tag of a metric line.
type Tag struct{ Key, Value string }

// Metric types of a line.
const (
	gauge   = "g"
	counter = "c"
)

// MaxPacket bounds a datagram: 1432 bytes fit an Ethernet MTU with room
// for IPv6 and UDP headers, so no datagram is fragmented (a lost fragment
// loses every line in it).
const MaxPacket = 1432

// Client batches lines and sends them to one statsd address. Safe for
// concurrent use.
type Client struct {
	conn   net.Conn
	format Format
	tags   []Tag // added to every line

	mu      sync.Mutex
	packets [][]byte // full datagrams waiting for Flush
	cur     []byte
}

// Dial opens a UDP socket to addr (host:port). UDP has no handshake: a
// daemon that is not there shows only as send errors, if at all.
func Dial(ctx context.Context, addr string, format Format, tags []Tag) (*Client, error) {
	if _, err := ParseFormat(string(format)); err != nil {
		return nil, err
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "udp", addr)
	if err != nil {
		return nil, fmt.Errorf("statsd %s: %w", addr, err)
	}
	if format == "" {
		format = Telegraf
	}
	return &Client{conn: conn, format: format, tags: tags}, nil
}

// Gauge sets gauge name to v. A negative value is sent as a reset to 0
// then the value: statsd reads a leading '-' as a decrement.
func (c *Client) Gauge(name string, v float64, tags ...Tag) {
	if v < 0 {
		c.add(AppendLine(nil, c.format, name, 0, gauge, c.tags, tags))
	}
	c.add(AppendLine(nil, c.format, name, v, gauge, c.tags, tags))
}

// Count adds delta to counter name.
func (c *Client) Count(name string, delta float64, tags ...Tag) {
	c.add(AppendLine(nil, c.format, name, delta, counter, c.tags, tags))
}

func (c *Client) add(line []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.cur) > 0 && len(c.cur)+1+len(line) > MaxPacket {
		c.packets = append(c.packets, c.cur)
		c.cur = nil
	}
	if len(c.cur) > 0 {
		c.cur = append(c.cur, '\n')
	}
	c.cur = append(c.cur, line...)
}

// Flush sends the lines added since the last Flush, one datagram per
// MaxPacket bytes of whole lines. Lines are dropped after a failed send
// (statsd is best effort; the next round sends fresh values).
func (c *Client) Flush() error {
	c.mu.Lock()
	packets := c.packets
	if len(c.cur) > 0 {
		packets = append(packets, c.cur)
	}
	c.packets, c.cur = nil, nil
	c.mu.Unlock()
	var firstErr error
	sent := 0
	for _, p := range packets {
		if _, err := c.conn.Write(p); err != nil {
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		sent++
	}
	if firstErr != nil {
		return fmt.Errorf("statsd %s: %d of %d datagrams not sent: %w", c.conn.RemoteAddr(), len(packets)-sent, len(packets), firstErr)
	}
	return nil
}

// Close closes the socket; lines not flushed are dropped.
func (c *Client) Close() error { return c.conn.Close() }

// AppendLine appends one statsd line (no newline) to b: the client's tags
// first, then the metric's.
func AppendLine(b []byte, f Format, name string, v float64, typ string, common, tags []Tag) []byte {
	name = clean(name)
	switch f {
	case DataDog:
		b = append(b, name...)
		b = append(b, ':')
		b = appendValue(b, v)
		b = append(b, '|')
		b = append(b, typ...)
		first := true
		for _, set := range [][]Tag{common, tags} {
			for _, t := range set {
				if first {
					b = append(b, "|#"...)
					first = false
				} else {
					b = append(b, ',')
				}
				b = append(b, clean(t.Key)...)
				b = append(b, ':')
				b = append(b, clean(t.Value)...)
			}
		}
	default: // Telegraf
		b = append(b, name...)
		for _, set := range [][]Tag{common, tags} {
			for _, t := range set {
				b = append(b, ',')
				b = append(b, clean(t.Key)...)
				b = append(b, '=')
				b = append(b, clean(t.Value)...)
			}
		}
		b = append(b, ':')
		b = appendValue(b, v)
		b = append(b, '|')
		b = append(b, typ...)
	}
	return b
}

func appendValue(b []byte, v float64) []byte {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		v = 0 // statsd has no NaN; a gauge never set reads 0
	}
	return strconv.AppendFloat(b, v, 'f', -1, 64)
}

// clean replaces the characters that end a name, value or tag in either
// syntax (':', '|', ',', '=', '#', '@' and blanks) with '_', so that a
// site name or tag value can never split or forge a line.
func clean(s string) string {
	bad := func(r rune) bool {
		switch r {
		case ':', '|', ',', '=', '#', '@', ' ', '\t', '\n', '\r':
			return true
		}
		return false
	}
	if !strings.ContainsFunc(s, bad) {
		return s
	}
	return strings.Map(func(r rune) rune {
		if bad(r) {
			return '_'
		}
		return r
	}, s)
}
