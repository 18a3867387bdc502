package agent

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const monitoringSite = "sites: {a: {pg: \"host=db\", repo: /r}}\n"

func TestParseMonitoring(t *testing.T) {
	cfg, err := Parse([]byte(monitoringSite+`statsd:
  host: 127.0.0.1
  port: 8125
  format: datadog
  tags: {env: prod}
pushgateway:
  endpoint: http://127.0.0.1:9091
  tags: {dc: eu1}
syslog: true
syslog_address: udp://127.0.0.1:514
syslog_facility: local5
webhook:
  url: https://hooks.example/pgvault
  secret_file: hook.secret
  format: slack
  timeout: 3s
`), "/etc/pgvault/pgvault.yaml")
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"statsd addr", cfg.Statsd.Addr(), "127.0.0.1:8125"},
		{"statsd format", cfg.Statsd.Format, "datadog"},
		{"statsd tag", cfg.Statsd.Tags["env"], "prod"},
		{"pushgateway", cfg.Pushgateway.Endpoint, "http://127.0.0.1:9091"},
		{"pushgateway tag", cfg.Pushgateway.Tags["dc"], "eu1"},
		{"syslog", cfg.Syslog, true},
		{"syslog_address", cfg.SyslogAddress, "udp://127.0.0.1:514"},
		{"syslog_facility", cfg.SyslogFacility, "local5"},
		{"webhook secret_file", cfg.Webhook.SecretFile, "/etc/pgvault/hook.secret"},
		{"webhook format", cfg.Webhook.Format, "slack"},
		{"webhook timeout", cfg.Webhook.Timeout.D, 3 * time.Second},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
}

func TestParseMonitoringDefaults(t *testing.T) {
	cfg, err := Parse([]byte(monitoringSite+"statsd: {host: \"::1\", port: 8125}\nwebhook: {url: \"http://h/x\"}\n"), "p.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Statsd.Format != "telegraf" || cfg.Statsd.Addr() != "[::1]:8125" || cfg.Pushgateway != nil || cfg.Syslog ||
		cfg.SyslogAddress != "/dev/log" || cfg.SyslogFacility != "local2" ||
		cfg.Webhook.Format != "json" || cfg.Webhook.Timeout.D != 10*time.Second || cfg.Webhook.SecretFile != "" {
		t.Fatalf("defaults: statsd %+v pushgateway %v syslog %v %s %s webhook %+v",
			cfg.Statsd, cfg.Pushgateway, cfg.Syslog, cfg.SyslogAddress, cfg.SyslogFacility, cfg.Webhook)
	}
}

func TestParseMonitoringErrorsNameTheField(t *testing.T) {
	for _, tc := range []struct {
		name, yaml  string
		field, text string
	}{
		{"statsd unknown key", "statsd: {host: h, port: 1, prefix: x}", "statsd.prefix", "unknown field"},
		{"statsd no host", "statsd: {port: 8125}", "statsd.host", "required"},
		{"statsd no port", "statsd: {host: h}", "statsd.port", "8125"},
		{"statsd port range", "statsd: {host: h, port: 70000}", "statsd.port", "65535"},
		{"statsd format", "statsd: {host: h, port: 1, format: graphite}", "statsd.format", "telegraf or datadog"},
		{"statsd site tag", "statsd: {host: h, port: 1, tags: {site: x}}", "statsd.tags", "site"},
		{"statsd tags a list", "statsd: {host: h, port: 1, tags: [a]}", "statsd.tags", "cannot unmarshal list"},
		{"pushgateway no endpoint", "pushgateway: {tags: {a: b}}", "pushgateway.endpoint", "required"},
		{"pushgateway not http", "pushgateway: {endpoint: \"127.0.0.1:9091\"}", "pushgateway.endpoint", "http://"},
		{"pushgateway bad label", "pushgateway: {endpoint: \"http://h:9091\", tags: {\"a-b\": x}}", "pushgateway.tags", "label name"},
		{"pushgateway reserved label", "pushgateway: {endpoint: \"http://h:9091\", tags: {site: x}}", "pushgateway.tags", "agent's own"},
		{"syslog not a bool", "syslog: maybe", "syslog", "true/false"},
		{"syslog address", "syslog: true\nsyslog_address: \"udp://h\"", "syslog_address", "udp://host:port"},
		{"syslog facility", "syslog: true\nsyslog_facility: local9", "syslog_facility", "local0 to local7"},
		{"webhook no url", "webhook: {timeout: 1s}", "webhook.url", "required"},
		{"webhook url scheme", "webhook: {url: \"ftp://h/x\"}", "webhook.url", "https://"},
		{"webhook format", "webhook: {url: \"http://h\", format: teams}", "webhook.format", "json"},
		{"webhook timeout", "webhook: {url: \"http://h\", timeout: 10}", "webhook.timeout", "Go duration"},
		{"webhook unknown key", "webhook: {url: \"http://h\", secret: x}", "webhook.secret", "secret_file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(monitoringSite+tc.yaml+"\n"), "p.yaml")
			if err == nil {
				t.Fatal("no error")
			}
			msg := err.Error()
			if strings.Contains(msg, "\n") || !errors.Is(err, ErrConfig) {
				t.Errorf("not a one-line ConfigError: %q", msg)
			}
			if !strings.Contains(msg, ": "+tc.field+" ") && !strings.Contains(msg, ": "+tc.field+":") {
				t.Errorf("error does not name %s: %s", tc.field, msg)
			}
			if !strings.Contains(msg, tc.text) {
				t.Errorf("error does not say %q: %s", tc.text, msg)
			}
		})
	}
}

func TestLoadWebhookSecret(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "pgvault.yaml")
	secret := filepath.Join(dir, "hook.secret")
	writeFile(t, conf, monitoringSite+"webhook: {url: \"http://h/x\", secret_file: hook.secret}\n", 0o644)
	noEnv := func(string) string { return "" }

	writeFile(t, secret, "hook-key-42\n", 0o640)
	cfg, err := Load(conf, LoadOptions{Strict: true, Getenv: noEnv})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Webhook.Secret != "hook-key-42" {
		t.Fatalf("secret %q", cfg.Webhook.Secret)
	}

	os.Chmod(secret, 0o644)
	_, err = Load(conf, LoadOptions{Strict: true, Getenv: noEnv})
	if !errors.Is(err, ErrInsecureSecret) || !strings.Contains(err.Error(), "webhook.secret_file") || strings.Contains(err.Error(), "hook-key-42") {
		t.Fatalf("world-readable secret file: %v", err)
	}

	writeFile(t, secret, "\n", 0o600)
	if _, err := Load(conf, LoadOptions{Strict: true, Getenv: noEnv}); err == nil || !strings.Contains(err.Error(), "webhook.secret_file") {
		t.Fatalf("empty secret file: %v", err)
	}
	os.Remove(secret)
	if _, err := Load(conf, LoadOptions{Strict: true, Getenv: noEnv}); err == nil || !strings.Contains(err.Error(), "webhook.secret_file") {
		t.Fatalf("missing secret file: %v", err)
	}
}

// TestExampleMonitoringParses keeps the commented monitoring block of the
// example file valid: uncommented, it parses.
func TestExampleMonitoringParses(t *testing.T) {
	name := "../../../docs/reference/pgvault.example.yaml"
	data, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	head, block, ok := strings.Cut(string(data), "\n#statsd:")
	if !ok {
		t.Fatalf("%s has no commented statsd block", name)
	}
	var out []string
	for _, l := range strings.Split("#statsd:"+block, "\n") {
		// "#key:" and "#  nested:" are settings; "# text" is prose.
		if strings.HasPrefix(l, "#") && !strings.HasPrefix(l, "# ") || strings.HasPrefix(l, "#  ") {
			l = l[1:]
		}
		out = append(out, l)
	}
	cfg, err := Parse([]byte(head+"\n"+strings.Join(out, "\n")), name)
	if err != nil {
		t.Fatalf("uncommented monitoring block: %v", err)
	}
	if cfg.Statsd == nil || cfg.Pushgateway == nil || cfg.Webhook == nil || cfg.Webhook.SecretFile == "" {
		t.Fatalf("monitoring block not read: statsd %v pushgateway %v webhook %v", cfg.Statsd, cfg.Pushgateway, cfg.Webhook)
	}
}
