package translate

import (
	"encoding/json"
	"net"
	"net/url"
	"regexp"
	"strconv"
	"strings"
)

// pghoard's statsd, pushgateway and syslog keys: the agent took their
// names and forms (docs/reference/config.md, monitoring outputs), so they
// carry over value for value. The package cannot import the agent, so
// its checks (cmd/pgvault/agent/config_monitoring.go) are repeated here:
// a value the agent would refuse stays a comment, and the output loads.

// pghoardStatsdDefaults are pghoard's StatsClient defaults: "statsd": {}
// sends to 127.0.0.1:8125, while the agent requires host and port.
const (
	pghoardStatsdHost = "127.0.0.1"
	pghoardStatsdPort = 8125
)

// promLabelRe is a Prometheus label name, as the agent checks it.
var promLabelRe = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*$`)

// pushgatewayReserved are labels of the agent's own series: the agent
// refuses a Pushgateway tag of one of these names.
var pushgatewayReserved = map[string]bool{"site": true, "alert": true, "version": true, "job": true}

// syslogFacilities are the agent's facility names by syslog code (the
// numbers Python's SysLogHandler also takes). Codes 12 to 15 (ntp,
// security, console, solaris-cron in Python) have no name in the agent.
var syslogFacilities = map[int]string{
	0: "kern", 1: "user", 2: "mail", 3: "daemon", 4: "auth", 5: "syslog", 6: "lpr", 7: "news",
	8: "uucp", 9: "cron", 10: "authpriv", 11: "ftp",
	16: "local0", 17: "local1", 18: "local2", 19: "local3", 20: "local4", 21: "local5", 22: "local6", 23: "local7",
}

// pghoardMonitoring writes the top-level monitoring keys; use marks a
// source key as handled.
func pghoardMonitoring(t *block, use func(string) (any, bool)) {
	sent := false
	if v, ok := use("statsd"); ok {
		sent = pghoardStatsd(t, v) || sent
	}
	if v, ok := use("pushgateway"); ok {
		sent = pghoardPushgateway(t, v) || sent
	}
	if sent {
		t.note("statsd/pushgateway: the agent sends its own series (pgvault.* / pgvault_*) every stats_interval, not pghoard's (pghoard.*): dashboards and alerts on pghoard's names need new queries")
	}
	if v, ok := use("syslog"); ok {
		switch v := v.(type) {
		case bool:
			t.set("syslog", v, "")
		case nil:
			t.set("syslog", false, "null in pghoard: off")
		default:
			t.notCarried("syslog", describe("", v), typeNote("true or false"))
		}
	}
	if v, ok := use("syslog_address"); ok {
		pghoardSyslogAddress(t, v)
	}
	if v, ok := use("syslog_facility"); ok {
		pghoardSyslogFacility(t, v)
	}
}

// pghoardStatsd writes the statsd block and reports whether it did.
func pghoardStatsd(t *block, v any) bool {
	st, ok := v.(map[string]any)
	if !ok {
		// pghoard starts a statsd client only for an object.
		t.notCarried("statsd", describe("statsd", v), typeNote("an object"))
		return false
	}
	host, port := pghoardStatsdHost, pghoardStatsdPort
	hostNote, portNote := "pghoard's default", "pghoard's default"
	if hv, has := st["host"]; has {
		h, ok := asString(hv)
		switch {
		case hv == nil:
			t.notCarried("statsd", describe("statsd", st), "a null host turned pghoard's statsd off")
			return false
		case !ok || strings.TrimSpace(h) == "":
			t.notCarried("statsd", describe("statsd", st), "statsd.host is not a host name or address: check the source file")
			return false
		}
		host, hostNote = h, ""
	}
	if pv, has := st["port"]; has {
		p, ok := asInt(pv)
		switch {
		case pv == nil:
			t.notCarried("statsd", describe("statsd", st), "a null port turned pghoard's statsd off")
			return false
		case !ok || p < 1 || p > 65535:
			t.notCarried("statsd", describe("statsd", st), "statsd.port is not a UDP port, 1 to 65535: check the source file")
			return false
		}
		port, portNote = p, ""
	}
	sb := t.child("statsd")
	sb.set("host", host, hostNote)
	sb.set("port", port, portNote)
	if fv, has := st["format"]; has {
		// pghoard compares with "datadog" only: any other value sent
		// Telegraf's syntax, which is also the agent's default.
		switch f, _ := asString(fv); {
		case f == "telegraf" || f == "datadog":
			sb.set("format", f, "")
		case fv == nil:
		default:
			sb.notCarried("statsd.format", describe("", fv),
				"the agent takes telegraf or datadog; pghoard sent Telegraf's syntax for any other value, as the agent does without format")
		}
	}
	if tv, has := st["tags"]; has && tv != nil {
		pghoardTags(sb, "statsd", tv, func(k string) string {
			if k == "" || k == "site" {
				return "the agent tags every line with its site and takes no tag named site or with no name"
			}
			return ""
		})
	}
	for _, k := range sortedKeys(st) {
		switch k {
		case "host", "port", "format", "tags":
		default:
			sb.notCarried("statsd."+k, describe(k, st[k]), "not a pghoard statsd key this translator knows")
		}
	}
	return true
}

// pghoardPushgateway writes the pushgateway block and reports whether it did.
func pghoardPushgateway(t *block, v any) bool {
	pg, ok := v.(map[string]any)
	if !ok {
		t.notCarried("pushgateway", describe("pushgateway", v), typeNote("an object"))
		return false
	}
	// The endpoint may hold a password (user:password@host): comments
	// show it redacted, and it is never written out.
	shown := make(map[string]any, len(pg))
	for k, v := range pg {
		shown[k] = v
	}
	raw, isString := asString(pg["endpoint"])
	if isString {
		shown["endpoint"] = redactURL(raw)
	}
	if !isString || strings.TrimSpace(raw) == "" {
		t.notCarried("pushgateway", describe("pushgateway", shown), "no endpoint: pghoard pushed nothing without one")
		return false
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		t.notCarried("pushgateway", describe("pushgateway", shown), "the agent needs the Pushgateway's http:// or https:// URL (http://host:9091)")
		return false
	}
	pb := t.child("pushgateway")
	endpoint := raw
	if _, hasPw := u.User.Password(); hasPw {
		u.User = url.User(u.User.Username())
		endpoint = u.String()
		pb.note("REVIEW: the password in pghoard's pushgateway.endpoint was not copied: put it back in the URL (user:password@) by hand, or the Pushgateway refuses the pushes")
	}
	pb.set("endpoint", endpoint, "")
	if tv, has := pg["tags"]; has && tv != nil {
		pghoardTags(pb, "pushgateway", tv, func(k string) string {
			switch {
			case !promLabelRe.MatchString(k) || strings.HasPrefix(k, "__"):
				return "not a Prometheus label name (letters, digits and '_', not first a digit, not starting with __)"
			case pushgatewayReserved[k]:
				return "the agent's own series carry a " + k + " label: the Pushgateway would refuse every push; rename the tag"
			}
			return ""
		})
	}
	for _, k := range sortedKeys(pg) {
		switch k {
		case "endpoint", "tags":
		case "job":
			pb.notCarried("pushgateway.job", describe(k, pg[k]), `the agent pushes as job="pgvault"`)
		case "instance":
			pb.notCarried("pushgateway.instance", describe(k, pg[k]), "the agent pushes with instance=<host name>; a tag named instance replaces it")
		default:
			pb.notCarried("pushgateway."+k, describe(k, pg[k]), "not a pghoard pushgateway key this translator knows")
		}
	}
	return true
}

// pghoardTags writes a tags block under b; refuse says why the agent
// would refuse a tag name ("" if it takes it).
func pghoardTags(b *block, owner string, v any, refuse func(string) string) {
	tags, ok := v.(map[string]any)
	if !ok {
		b.notCarried(owner+".tags", describe("tags", v), typeNote("an object"))
		return
	}
	tb := b.child("tags")
	for _, k := range sortedKeys(tags) {
		key := owner + ".tags." + k
		if why := refuse(k); why != "" {
			tb.notCarried(key, describe(k, tags[k]), why)
			continue
		}
		// The tag becomes a real value: a tag whose name looks secret
		// is kept out, as every secret is.
		if isSecret(k) {
			tb.notCarried(key, secretNotCopied, "secrets are never copied: add the tag by hand")
			continue
		}
		val, ok := tagValue(tags[k])
		if !ok {
			tb.notCarried(key, describe(k, tags[k]), typeNote("a string, number or boolean"))
			continue
		}
		tb.set(k, val, "")
	}
}

// tagValue is a tag's value as pghoard wrote it on the wire (Python's
// str(): True and False for booleans).
func tagValue(v any) (string, bool) {
	switch v := v.(type) {
	case string:
		return v, true
	case json.Number:
		return v.String(), true
	case bool:
		if v {
			return "True", true
		}
		return "False", true
	}
	return "", false
}

// pghoardSyslogAddress carries syslog_address: pghoard hands it to
// Python's SysLogHandler, which takes a unix socket path or a
// [host, port] pair (UDP).
func pghoardSyslogAddress(t *block, v any) {
	reason := "the agent takes a unix socket path (/dev/log), udp://host:port or tcp://host:port"
	switch a := v.(type) {
	case string:
		if !strings.HasPrefix(a, "/") {
			t.notCarried("syslog_address", describe("", v), "not an absolute socket path: "+reason)
			return
		}
		t.set("syslog_address", a, "")
		return
	case []any:
		if len(a) != 2 {
			break
		}
		host, hok := asString(a[0])
		port, pok := asInt(a[1])
		if !hok || host == "" || !pok || port < 1 || port > 65535 {
			break
		}
		addr := "udp://" + net.JoinHostPort(host, strconv.Itoa(port))
		// Checked as the agent parses it: a host url.Parse refuses
		// would make the whole file fail to load.
		if u, err := url.Parse(addr); err != nil || u.Host == "" || (u.Path != "" && u.Path != "/") {
			break
		}
		t.set("syslog_address", addr, "pghoard's [host, port]: UDP")
		return
	}
	t.notCarried("syslog_address", describe("", v), reason)
}

// pghoardSyslogFacility carries syslog_facility: a name or, as Python's
// SysLogHandler also takes, a facility number.
func pghoardSyslogFacility(t *block, v any) {
	reason := "the agent takes local0 to local7, daemon, user, syslog, auth, authpriv, cron, kern, lpr, mail, news, uucp or ftp"
	if s, ok := v.(string); ok {
		for _, name := range syslogFacilities {
			if strings.ToLower(s) == name {
				t.set("syslog_facility", s, "")
				return
			}
		}
		t.notCarried("syslog_facility", describe("", v), reason)
		return
	}
	if n, ok := v.(json.Number); ok {
		if code, err := strconv.Atoi(n.String()); err == nil && syslogFacilities[code] != "" {
			t.set("syslog_facility", syslogFacilities[code], "pghoard's facility number "+n.String())
			return
		}
	}
	t.notCarried("syslog_facility", describe("", v), reason)
}

// redactURL hides a URL's password for a comment.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		// Unparsable: the text after a scheme may still hold user:password@.
		if strings.Contains(s, "@") {
			return secretNotCopied
		}
		return s
	}
	return u.Redacted()
}
