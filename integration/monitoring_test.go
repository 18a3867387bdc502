package integration

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/common/model"

	"github.com/pgvault/pgvault/integration/pgtest"
	"github.com/pgvault/pgvault/integration/pushgateway"
	"github.com/pgvault/pgvault/internal/webhook"
)

// collector keeps what a listener received, for waitFor to look at.
type collector struct {
	mu    sync.Mutex
	items []string
}

func (c *collector) add(s ...string) {
	c.mu.Lock()
	c.items = append(c.items, s...)
	c.mu.Unlock()
}

// has reports whether an item contains every one of parts.
func (c *collector) has(parts ...string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, it := range c.items {
		ok := true
		for _, p := range parts {
			if !strings.Contains(it, p) {
				ok = false
				break
			}
		}
		if ok {
			return true
		}
	}
	return false
}

func (c *collector) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.items)
}

// readDatagrams collects the lines of every datagram conn receives until
// it is closed.
func readDatagrams(conn net.PacketConn, into *collector) {
	buf := make([]byte, 65536)
	for {
		n, _, err := conn.ReadFrom(buf)
		if err != nil {
			return
		}
		into.add(strings.Split(string(buf[:n]), "\n")...)
	}
}

// TestAgentMonitoringOutputs runs the real agent against a real cluster
// with every monitoring output pghoard users run: statsd lines reach a
// UDP listener (Telegraf tags), the metrics reach a real Pushgateway,
// the log reaches a syslog socket, and the authentication_error alert
// (a wrong PostgreSQL password) is posted to a webhook, signed, when it
// starts and again when the right password and SIGHUP end it.
func TestAgentMonitoringOutputs(t *testing.T) {
	c := pgtest.Start(t, pgtest.Options{})
	c.Exec(t, "CREATE ROLE vaultagent LOGIN REPLICATION PASSWORD 'right horse'")
	prependHBA(t, c, "vaultagent", "host replication vaultagent 127.0.0.1/32 scram-sha-256\nhost all vaultagent 127.0.0.1/32 scram-sha-256\n")
	v := newPostgresVault(t)
	s := newAgentSetup(t, c, v)
	s.pgPass = filepath.Join(s.dir, "pg.pass")
	os.WriteFile(s.pgPass, []byte("wrong staple\n"), 0o600)

	// statsd: a UDP listener.
	udp, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	statsdLines := &collector{}
	go readDatagrams(udp, statsdLines)
	// syslog: a unixgram socket, as /dev/log is.
	sockDir := t.TempDir()
	syslogPath := filepath.Join(sockDir, "log")
	sl, err := net.ListenPacket("unixgram", syslogPath)
	if err != nil {
		t.Fatal(err)
	}
	defer sl.Close()
	syslogLines := &collector{}
	go readDatagrams(sl, syslogLines)
	// The Pushgateway.
	pg := pushgateway.Start(t)
	// The webhook receiver checks every signature.
	const secret = "hook secret 7f3a"
	secretFile := filepath.Join(s.dir, "webhook.secret")
	os.WriteFile(secretFile, []byte(secret+"\n"), 0o600)
	type delivery struct {
		ev       webhook.Event
		verified bool
	}
	hooks := make(chan delivery, 20)
	hookSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var d delivery
		d.verified = webhook.Verify([]byte(secret), body, r.Header.Get(webhook.SignatureHeader))
		if err := json.Unmarshal(body, &d.ev); err != nil {
			t.Errorf("webhook body %q: %v", body, err)
		}
		hooks <- d
	}))
	defer hookSrv.Close()
	nextHook := func(what string) delivery {
		t.Helper()
		select {
		case d := <-hooks:
			return d
		case <-time.After(60 * time.Second):
			t.Fatalf("no webhook delivery (%s) within 60 s", what)
		}
		return delivery{}
	}

	s.write(t, fmt.Sprintf("host=127.0.0.1 port=%d user=vaultagent dbname=postgres sslmode=disable", c.Port()),
		"    pg_password_file: "+s.pgPass+"\n    basebackup:\n      interval_hours: 24\n      fast_checkpoint: true")
	conf, err := os.ReadFile(s.conf)
	if err != nil {
		t.Fatal(err)
	}
	conf = append(conf, fmt.Sprintf(`statsd:
  host: 127.0.0.1
  port: %d
  format: telegraf
  tags:
    env: test
pushgateway:
  endpoint: %s
  tags:
    dc: lab
syslog: true
syslog_address: %s
syslog_facility: local2
webhook:
  url: %s/hooks/pgvault
  secret_file: %s
  timeout: 5s
`, udp.LocalAddr().(*net.UDPAddr).Port, pg.URL, syslogPath, hookSrv.URL, secretFile)...)
	if err := os.WriteFile(s.conf, conf, 0o600); err != nil {
		t.Fatal(err)
	}
	a := s.start(t)

	// The alert starts: a signed "raised" event.
	d := nextHook("raised")
	if !d.verified || d.ev.Event != "raised" || d.ev.Site != "main" || d.ev.Alert != "authentication_error" ||
		!strings.Contains(d.ev.Message, "password") || d.ev.Host == "" || d.ev.Time.IsZero() {
		t.Fatalf("raise delivery: verified %v, %+v", d.verified, d.ev)
	}
	t.Logf("webhook raised: %s", d.ev.Message)

	// statsd sees the alert and the site's counters every stats_interval (1s).
	waitFor(t, 30*time.Second, "statsd lines of the alert and a counter", func() (bool, error) {
		a.exited("statsd lines")
		ok := statsdLines.has("pgvault.alert,env=test,site=main,alert=authentication_error:1|g") &&
			statsdLines.has("pgvault.upload_errors,env=test,site=main:", "|c") &&
			statsdLines.has("pgvault.backup_running,env=test,site=main:0|g")
		return ok, fmt.Errorf("%d lines so far", statsdLines.count())
	})
	// The Pushgateway holds the agent's group.
	group := model.LabelSet{"job": "pgvault", "dc": "lab", "site": "main"}
	waitFor(t, 30*time.Second, "the alert on the Pushgateway", func() (bool, error) {
		a.exited("the Pushgateway")
		fams, err := pg.Metrics()
		if err != nil {
			return false, err
		}
		l := group.Clone()
		l["alert"] = "authentication_error"
		v, ok := pushgateway.Value(fams, "pgvault_alert", l)
		return ok && v == 1, fmt.Errorf("pgvault_alert = %v (found %v)", v, ok)
	})
	// Syslog has the agent's log, with its site attribute.
	waitFor(t, 30*time.Second, "the alert in syslog", func() (bool, error) {
		a.exited("syslog")
		return syslogLines.has("<148>", "pgvault[", `msg="alert started"`, "site=main", "alert=authentication_error"),
			fmt.Errorf("%d syslog lines so far", syslogLines.count())
	})

	// The right password and SIGHUP: the alert ends, a signed "cleared"
	// event, and a first backup that statsd and the Pushgateway count.
	os.WriteFile(s.pgPass, []byte("right horse\n"), 0o600)
	a.hup()
	d = nextHook("cleared")
	if !d.verified || d.ev.Event != "cleared" || d.ev.Site != "main" || d.ev.Alert != "authentication_error" {
		t.Fatalf("clear delivery: verified %v, %+v", d.verified, d.ev)
	}
	a.waitState("the first backup with the right password", 60*time.Second, func(st agentState) bool {
		return st.Sites["main"].Backup.Count >= 1
	})
	waitFor(t, 30*time.Second, "statsd and the Pushgateway to see the backup and the alert's end", func() (bool, error) {
		a.exited("the backup's figures")
		fams, err := pg.Metrics()
		if err != nil {
			return false, err
		}
		backups, _ := pushgateway.Value(fams, "pgvault_backups", group)
		l := group.Clone()
		l["alert"] = "authentication_error"
		alert, _ := pushgateway.Value(fams, "pgvault_alert", l)
		ok := backups >= 1 && alert == 0 &&
			statsdLines.has("pgvault.alert,env=test,site=main,alert=authentication_error:0|g") &&
			statsdLines.has("pgvault.backups,env=test,site=main:1|g")
		return ok, fmt.Errorf("pushgateway: backups %v, alert %v; %d statsd lines", backups, alert, statsdLines.count())
	})
	if code, _ := a.stop(); code != 0 {
		t.Fatalf("exit %d", code)
	}
	select {
	case d := <-hooks:
		t.Fatalf("unexpected webhook delivery: %+v", d.ev)
	default:
	}
	if log := a.log.String(); strings.Contains(log, secret) || strings.Contains(log, "/hooks/pgvault") {
		t.Fatalf("the agent's log holds the webhook secret or URL path:\n%s", log)
	}
}
