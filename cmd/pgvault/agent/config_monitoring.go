package agent

import (
	"net"
	"net/url"
	"regexp"
	"strconv"
	"time"

	"github.com/pgvault/pgvault/internal/statsd"
	"github.com/pgvault/pgvault/internal/sysloghandler"
	"github.com/pgvault/pgvault/internal/webhook"
)

// DefaultWebhookTimeout bounds one webhook POST.
const DefaultWebhookTimeout = 10 * time.Second

// Statsd is pghoard's statsd block.
type Statsd struct {
	Host string `yaml:"host"`
	Port int    `yaml:"port"`
	// Format is telegraf (default) or datadog.
	Format string            `yaml:"format"`
	Tags   map[string]string `yaml:"tags"`
}

// Addr is host:port.
func (s *Statsd) Addr() string {
	return net.JoinHostPort(s.Host, strconv.Itoa(s.Port))
}

// Pushgateway is pghoard's pushgateway block.
type Pushgateway struct {
	// Endpoint is the Pushgateway's URL (http://host:9091).
	Endpoint string `yaml:"endpoint"`
	// Tags are grouping labels added to every pushed series (besides
	// job="pgvault" and instance=<host name>, which a tag may replace).
	Tags map[string]string `yaml:"tags"`
}

// Webhook is where alert events are posted.
type Webhook struct {
	URL string `yaml:"url"`
	// SecretFile holds the HMAC key (first line): the body's signature
	// goes in X-Pgvault-Signature. It must not be readable by every user.
	SecretFile string `yaml:"secret_file"`
	// Format is json (default: the event as JSON) or slack ({"text": ...}).
	Format  string   `yaml:"format"`
	Timeout Duration `yaml:"timeout"`

	// Secret is read by Load from SecretFile.
	Secret string `yaml:"-"`
}

// labelNameRe is a Prometheus label name.
var labelNameRe = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*$`)

// reservedLabels are labels the agent's own series carry: a grouping
// label of the same name would make the Pushgateway refuse every push.
var reservedLabels = map[string]bool{"site": true, "alert": true, "version": true, "job": true}

// fillMonitoring validates the monitoring settings and sets their defaults.
func (c *Config) fillMonitoring() error {
	if s := c.Statsd; s != nil {
		if s.Host == "" {
			return fieldErr("statsd.host", "required: the statsd daemon's host (e.g. 127.0.0.1)")
		}
		if s.Port < 1 || s.Port > 65535 {
			return fieldErr("statsd.port", "%d: use the statsd daemon's UDP port, 1 to 65535 (usually 8125)", s.Port)
		}
		f, err := statsd.ParseFormat(s.Format)
		if err != nil {
			return fieldErr("statsd.format", "%q: use telegraf or datadog", s.Format)
		}
		s.Format = string(f)
		for k := range s.Tags {
			if k == "" || k == "site" {
				return fieldErr("statsd.tags", "tag %q: give a name other than site (the agent tags every line with its site)", k)
			}
		}
	}
	if p := c.Pushgateway; p != nil {
		u, err := url.Parse(p.Endpoint)
		if p.Endpoint == "" || err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fieldErr("pushgateway.endpoint", "required: the Pushgateway's http:// or https:// URL (e.g. http://127.0.0.1:9091)")
		}
		for k := range p.Tags {
			if !labelNameRe.MatchString(k) || len(k) > 1 && k[:2] == "__" {
				return fieldErr("pushgateway.tags", "tag %q is not a Prometheus label name (letters, digits and '_', not first a digit)", k)
			}
			if reservedLabels[k] {
				return fieldErr("pushgateway.tags", "tag %q is a label of the agent's own series: use another name", k)
			}
		}
	}
	if c.SyslogAddress == "" {
		c.SyslogAddress = sysloghandler.DefaultAddress
	}
	if _, err := sysloghandler.ParseAddress(c.SyslogAddress); err != nil {
		return fieldErr("syslog_address", "%q: use a unix socket path such as /dev/log, udp://host:port or tcp://host:port", c.SyslogAddress)
	}
	if c.SyslogFacility == "" {
		c.SyslogFacility = sysloghandler.DefaultFacility
	}
	if _, err := sysloghandler.ParseFacility(c.SyslogFacility); err != nil {
		return fieldErr("syslog_facility", "%q: use local0 to local7, daemon, user or another syslog facility name", c.SyslogFacility)
	}
	if w := c.Webhook; w != nil {
		u, err := url.Parse(w.URL)
		if w.URL == "" || err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fieldErr("webhook.url", "required: the http:// or https:// URL alert events are posted to")
		}
		switch w.Format {
		case "":
			w.Format = webhook.FormatJSON
		case webhook.FormatJSON, webhook.FormatSlack:
		default:
			return fieldErr("webhook.format", "%q: use json (the event as JSON) or slack ({\"text\": ...})", w.Format)
		}
		if w.Timeout.D == 0 {
			w.Timeout.D = DefaultWebhookTimeout
		}
		w.SecretFile = c.abs(w.SecretFile)
	}
	return nil
}

// resolveWebhookSecret reads webhook.secret_file.
func (c *Config) resolveWebhookSecret(strict bool) error {
	w := c.Webhook
	if w == nil || w.SecretFile == "" {
		return nil
	}
	secret, err := readSecret("webhook.secret_file", w.SecretFile, strict) // an empty file is an error
	if err != nil {
		return err
	}
	w.Secret = secret
	return nil
}
