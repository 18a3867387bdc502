package translate_test

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/pgvault/pgvault/cmd/pgvault/agent"
	"github.com/pgvault/pgvault/cmd/pgvault/translate"
	"github.com/pgvault/pgvault/repo/backend/all"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// secretsInTestdata are the secret values of the sample files: none may
// appear in any output.
var secretsInTestdata = []string{
	"hunter2", "wJalrXUtnFEMI", "AKIAEXAMPLEKEYID", "BEGIN PRIVATE KEY", "MIIEvQIBADANBgkq", "MIIBIjANBgkq",
	"zWaf6XtpjIVZC5444yXB", "barman-secret", "3a5f8e1c9b7d2f4e", "walg-pg-secret",
	"pghoard-azure-key", "pgbr-azure-key", "walg-az-key",
}

func TestTranslateGolden(t *testing.T) {
	tests := []struct {
		tool      translate.Tool
		file      string
		wantSites []string
		wantMode  map[string]string
		wantRepo  map[string]string
	}{
		{translate.Pghoard, "pghoard.json", []string{"analytics", "default", "ledger", "reports"},
			map[string]string{"default": "stream", "reports": "archive"},
			map[string]string{"default": "s3://acme-pg-backups/pgvault/default?region=eu-west-1", "reports": "file:///srv/pghoard/backups/pgvault/reports-db",
				"analytics": "gs://acme-analytics-pg/pgvault/analytics?project=acme-analytics", "ledger": "azure://pg-ledger/pgvault/ledger?account=acmepgbackups"}},
		{translate.PgBackRest, "pgbackrest.conf", []string{"ledger", "main", "reporting"},
			map[string]string{"main": "archive", "reporting": "archive"},
			map[string]string{"main": "s3://pg-backups/pgbackrest/pgvault/main?endpoint=https://minio.internal:9000&region=us-east-1&path_style=true",
				"ledger": "azure://pg-ledger/pgbackrest/pgvault/ledger?account=acmepgbackups"}},
		{translate.Barman, "barman.conf", []string{"pg-legacy", "pg-main"},
			map[string]string{"pg-main": "stream", "pg-legacy": "archive"},
			map[string]string{"pg-main": "file:///var/lib/barman/pgvault/pg-main"}},
		{translate.WALG, "walg.json", []string{"main"},
			map[string]string{"main": "archive"},
			map[string]string{"main": "s3://acme-walg/prod/pg15/pgvault/main?endpoint=https://minio.internal:9000&region=us-east-1&path_style=true"}},
		{translate.WALG, "walg-gcs.json", []string{"main"},
			map[string]string{"main": "archive"},
			map[string]string{"main": "gs://acme-walg-eu/pg15/orders/pgvault/main"}},
		{translate.WALG, "walg-azure.yaml", []string{"main"},
			map[string]string{"main": "archive"},
			map[string]string{"main": "azure://pg-walg/prod/pg16/pgvault/main?account=acmewalg"}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			res, err := translate.TranslateFile(tt.tool, filepath.Join("testdata", tt.file), translate.Options{})
			if err != nil {
				t.Fatal(err)
			}
			out := string(res.YAML)
			golden := filepath.Join("testdata", tt.file+".golden.yaml")
			if *update {
				os.WriteFile(golden, res.YAML, 0o644)
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -update)", err)
			}
			if out != string(want) {
				t.Errorf("output differs from %s (go test -update rewrites it):\n%s", golden, out)
			}
			for _, s := range secretsInTestdata {
				if strings.Contains(out, s) {
					t.Errorf("output holds the secret %q", s)
				}
			}
			if !strings.Contains(out, "<secret not copied>") && tt.tool != translate.Barman {
				t.Errorf("no secret was reported as not copied")
			}
			if res.NotCarried == 0 || !strings.Contains(out, "# not carried over: ") {
				t.Errorf("NotCarried = %d", res.NotCarried)
			}
			cfg, err := agent.Parse(res.YAML, "/etc/pgvault/pgvault.yaml")
			if err != nil {
				t.Fatalf("agent.Parse: %v", err)
			}
			names := cfg.SiteNames()
			if !slices.Equal(names, tt.wantSites) {
				t.Errorf("sites = %v, want %v", names, tt.wantSites)
			}
			for site, mode := range tt.wantMode {
				if got := cfg.Sites[site].Mode; got != mode {
					t.Errorf("%s mode = %s, want %s", site, got, mode)
				}
			}
			for site, repo := range tt.wantRepo {
				if got := cfg.Sites[site].Repo; got != repo {
					t.Errorf("%s repo = %s, want %s", site, got, repo)
				}
			}
			// agent.Parse checks the URLs too, but a repo the translator
			// writes must be one the repository layer opens as the
			// intended store, whatever the agent's checks become.
			for _, name := range names {
				raw := cfg.Sites[name].Repo
				loc, err := all.ParseURL(raw)
				if err != nil {
					t.Errorf("%s repo %s: all.ParseURL: %v", name, raw, err)
					continue
				}
				if scheme, _, _ := strings.Cut(raw, "://"); loc.Scheme != scheme {
					t.Errorf("%s repo %s parsed as %s", name, raw, loc.Scheme)
				}
			}
		})
	}
}

// The values pghoard's keys carry over one to one.
func TestPghoardOneToOne(t *testing.T) {
	res, err := translate.TranslateFile(translate.Pghoard, "testdata/pghoard.json", translate.Options{SecretsDir: "/run/secrets"})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := agent.Parse(res.YAML, "/etc/pgvault/pgvault.yaml")
	if err != nil {
		t.Fatal(err)
	}
	s := cfg.Sites["default"]
	sc := s.Schedule()
	p := s.Retention.Policy()
	if sc.Hour != 1 || sc.Minute != 15 || sc.Interval.Hours() != 6 || p.Count != 4 || p.CountMin != 2 || p.AgeDaysMax != 7 ||
		s.CompressionLevel != 3 || s.Slot != "pghoard_slot" || len(s.PG) != 2 || s.Basebackup.Method != "local" ||
		s.PGPasswordFile != "/run/secrets/default.pgpass" || s.PasswordFile != "/run/secrets/default.pass" {
		t.Errorf("site default = %+v", s)
	}
	if cfg.HTTP.Listen != "127.0.0.1:16000" || cfg.StateFile != "/var/lib/pghoard/pghoard_state.json" ||
		cfg.AlertDir != "/var/lib/pghoard/alerts" || cfg.UploadRetriesWarningLimit != 5 {
		t.Errorf("top level = %+v", cfg)
	}
	if st, pg := cfg.Statsd, cfg.Pushgateway; st == nil || st.Addr() != "127.0.0.1:8125" || st.Format != "telegraf" || st.Tags["app"] != "pghoard" ||
		pg == nil || pg.Endpoint != "http://pushgateway.internal:9091" || pg.Tags["env"] != "prod" ||
		!cfg.Syslog || cfg.SyslogAddress != "/dev/log" || cfg.SyslogFacility != "local2" {
		t.Errorf("monitoring = statsd %+v pushgateway %+v syslog %v %q %q", st, pg, cfg.Syslog, cfg.SyslogAddress, cfg.SyslogFacility)
	}
	if got := cfg.Sites["reports"].Schedule().Interval.Hours(); got != 24 {
		t.Errorf("reports interval = %v", got)
	}
}

func TestTranslateCases(t *testing.T) {
	tests := []struct {
		name    string
		tool    translate.Tool
		in      string
		wantErr error
		want    []string // substrings of the output
		parses  bool
	}{
		{"pghoard null interval", translate.Pghoard,
			`{"backup_sites": {"a": {"nodes": ["postgres://u:pw@h/db"], "basebackup_interval_hours": null, "basebackup_hour": 3}}}`,
			nil, []string{"interval_hours: 0", "pg: postgres://u@h/db", "not carried over: basebackup_hour = 3"}, true},
		{"pghoard google", translate.Pghoard,
			`{"backup_sites": {"g c": {"nodes": [{"host": "h"}], "object_storage": {"storage_type": "google", "project_id": "p-1", "bucket_name": "b", "credential_file": "/x.json", "proxy_info": {"host": "px", "pass": "hunter2"}}}}}`,
			nil, []string{"repo: gs://b/pgvault/g%20c?project=p-1", `site "g c" renamed g_c`, "set GOOGLE_APPLICATION_CREDENTIALS=/x.json in the agent's environment",
				"not carried over: object_storage.proxy_info = {host: px, pass: <secret not copied>} — set HTTPS_PROXY"}, true},
		{"pghoard google inline credentials", translate.Pghoard,
			`{"backup_sites": {"a": {"nodes": [{"host": "h"}], "object_storage": {"storage_type": "google", "bucket_name": "b", "credentials": {"private_key": "hunter2"}}}}}`,
			nil, []string{"repo: gs://b/pgvault/a", "object_storage.credentials = <secret not copied> — write the key to a file (chmod 600) and set GOOGLE_APPLICATION_CREDENTIALS"}, true},
		{"pghoard google without bucket", translate.Pghoard,
			`{"backup_sites": {"a": {"nodes": [{"host": "h"}], "object_storage": {"storage_type": "google", "credential_file": "/x.json"}}}}`,
			nil, []string{"REVIEW: the backups went to Google Cloud Storage without a bucket_name", "repo: file:///var/lib/pgvault/pgvault/a", "object_storage.credential_file = <secret not copied>"}, true},
		{"pghoard azure on azurite", translate.Pghoard,
			`{"backup_sites": {"a": {"nodes": [{"host": "h"}], "object_storage": {"storage_type": "azure", "account_name": "devstoreaccount1", "account_key": "hunter2", "bucket_name": "pgc", "host": "127.0.0.1", "port": 10000, "is_secure": false}}}}`,
			nil, []string{"repo: azure://pgc/pgvault/a?account=devstoreaccount1&endpoint=http://127.0.0.1:10000/devstoreaccount1",
				"set AZURE_STORAGE_KEY to the account key in the agent's environment", "object_storage.account_key = <secret not copied> — set AZURE_STORAGE_KEY"}, true},
		{"pghoard azure china with a sas token", translate.Pghoard,
			`{"backup_sites": {"a": {"nodes": [{"host": "h"}], "object_storage": {"storage_type": "azure", "account_name": "acct", "sas_token": "sv=hunter2", "container_name": "pgc", "azure_cloud": "china"}}}}`,
			nil, []string{"repo: azure://pgc/pgvault/a?account=acct&endpoint=https://acct.blob.core.chinacloudapi.cn", "AZURE_STORAGE_SAS_TOKEN"}, true},
		{"pghoard azure unknown cloud", translate.Pghoard,
			`{"backup_sites": {"a": {"nodes": [{"host": "h"}], "object_storage": {"storage_type": "azure", "account_name": "acct", "bucket_name": "pgc", "azure_cloud": "moon"}}}}`,
			nil, []string{"repo: azure://pgc/pgvault/a?account=acct", "not carried over: object_storage.azure_cloud = moon", "default Azure credential chain"}, true},
		{"pghoard azure container pgvault refuses", translate.Pghoard,
			`{"backup_sites": {"a": {"nodes": [{"host": "h"}], "object_storage": {"storage_type": "azure", "account_name": "acct", "bucket_name": "PG_Backups"}}}}`,
			nil, []string{"REVIEW: Azure container PG_Backups does not make a pgvault repository URL", "repo: file:///var/lib/pgvault/pgvault/a"}, true},
		{"pghoard swift keystone v3", translate.Pghoard,
			`{"backup_sites": {"a": {"nodes": [{"host": "h"}], "object_storage": {"storage_type": "swift", "user": "pgbackup", "key": "hunter2", "auth_url": "https://keystone.example:5000/v3", "auth_version": "3.0",
			"project_name": "dba", "user_domain_name": "Default", "project_domain_name": "Default", "container_name": "pghoard", "region_name": "RegionOne", "segment_size": 1024}}}}`,
			nil, []string{"repo: swift://pghoard/pgvault/a?auth_url=https://keystone.example:5000/v3&region=RegionOne&auth_version=3",
				"Swift credentials: set OS_USERNAME=pgbackup, OS_PASSWORD (the object_storage.key, not copied), OS_PROJECT_NAME=dba, OS_USER_DOMAIN_NAME=Default, OS_PROJECT_DOMAIN_NAME=Default in the agent's environment",
				"object_storage.key = <secret not copied> — set OS_PASSWORD", "not carried over: object_storage.segment_size = 1024"}, true},
		{"pghoard swift auth_url with a password", translate.Pghoard,
			`{"backup_sites": {"a": {"nodes": [{"host": "h"}], "object_storage": {"storage_type": "swift", "auth_url": "https://u:hunter2@keystone.example/v3", "container_name": "c"}}}}`,
			nil, []string{"REVIEW: Swift container c does not make a pgvault repository URL", "repo: file:///var/lib/pgvault/pgvault/a"}, true},
		{"pghoard sftp", translate.Pghoard,
			`{"backup_sites": {"a": {"nodes": [{"host": "h"}], "object_storage": {"storage_type": "sftp", "server": "bk", "port": 2222, "username": "u", "password": "x"}}}}`,
			nil, []string{"repo: sftp://u@bk:2222/~/pgvault/a", "object_storage.password = <secret not copied>"}, true},
		{"pghoard no sites", translate.Pghoard, `{"http_port": 1}`, translate.ErrNoSites, nil, false},
		{"pghoard not json", translate.Pghoard, "{\n\"backup_sites\": [}", translate.ErrSyntax, nil, false},
		{"pgbackrest option before section", translate.PgBackRest, "repo1-path=/x\n[main]\n", translate.ErrSyntax, nil, false},
		{"pgbackrest repeated option", translate.PgBackRest, "[main]\npg1-path=/a\npg1-path=/b\n", translate.ErrSyntax, nil, false},
		{"pgbackrest gcs without bucket", translate.PgBackRest, "[global]\nrepo1-type=gcs\nrepo1-gcs-key=/k.json\n[db]\npg1-path=/d\n",
			nil, []string{"Google Cloud Storage without repo1-gcs-bucket", "repo1-gcs-key = <secret not copied>"}, true},
		{"pgbackrest gcs", translate.PgBackRest, "[global]\nrepo1-type=gcs\nrepo1-path=/pgbackrest\nrepo1-gcs-bucket=acme-pg\nrepo1-gcs-key=/etc/pgbackrest/gcs.json\n[db]\npg1-path=/d\n",
			nil, []string{"repo: gs://acme-pg/pgbackrest/pgvault/db\n", "set GOOGLE_APPLICATION_CREDENTIALS=/etc/pgbackrest/gcs.json"}, true},
		{"pgbackrest gcs emulator and token", translate.PgBackRest, "[global]\nrepo1-type=gcs\nrepo1-gcs-bucket=b\nrepo1-gcs-endpoint=fake-gcs.test\nrepo1-storage-port=4443\nrepo1-gcs-key-type=token\nrepo1-gcs-key=hunter2\n[db]\npg1-path=/d\n",
			nil, []string{"repo: gs://b/var/lib/pgbackrest/pgvault/db?endpoint=https://fake-gcs.test:4443", "REVIEW: pgvault sends no credentials to an endpoint= server",
				"repo1-gcs-key = <secret not copied> — a token expires"}, true},
		{"pgbackrest azure path style with sas", translate.PgBackRest, "[global]\nrepo1-type=azure\nrepo1-path=/repo\nrepo1-azure-account=devstoreaccount1\nrepo1-azure-container=pgc\nrepo1-azure-key-type=sas\nrepo1-azure-key=sv=hunter2\nrepo1-storage-host=azurite\nrepo1-storage-port=10000\nrepo1-azure-uri-style=path\n[db]\npg1-path=/d\n",
			nil, []string{"repo: azure://pgc/repo/pgvault/db?account=devstoreaccount1&endpoint=https://azurite:10000/devstoreaccount1", "repo1-azure-key = <secret not copied> — set AZURE_STORAGE_SAS_TOKEN"}, true},
		{"pgbackrest azure sovereign cloud", translate.PgBackRest, "[global]\nrepo1-type=s3\nrepo1-s3-bucket=b\nrepo1-s3-key=hunter2\n[db]\npg1-path=/d\nrepo1-type=azure\nrepo1-azure-account=acct\nrepo1-azure-container=pgc\nrepo1-azure-endpoint=blob.core.usgovcloudapi.net\nrepo1-azure-key=hunter2\n",
			nil, []string{"repo: azure://pgc/var/lib/pgbackrest/pgvault/db?account=acct&endpoint=https://acct.blob.core.usgovcloudapi.net", "set AZURE_STORAGE_KEY to the account key",
				"repo1-s3-bucket = b — an option of repo1-type=s3; this stanza's repository is azure", "repo1-azure-key = <secret not copied> — set AZURE_STORAGE_KEY"}, true},
		{"pgbackrest sftp", translate.PgBackRest, "[global]\nrepo1-type=sftp\nrepo1-path=/backup\nrepo1-sftp-host=bk\nrepo1-sftp-host-user=pgbackrest\nrepo1-sftp-private-key-file=/home/postgres/.ssh/id_ed25519\n[db]\npg1-path=/d\n",
			nil, []string{"repo: sftp://pgbackrest@bk/backup/pgvault/db?identity=/home/postgres/.ssh/id_ed25519"}, true},
		{"barman repeated section", translate.Barman, "[a]\nconninfo = host=x\n[a]\n", translate.ErrSyntax, nil, false},
		{"barman continuation", translate.Barman, "[a]\nconninfo = host=x\n  user=y\n", nil, []string{`pg: "host=x\nuser=y"`}, true},
		{"walg file prefix", translate.WALG, "WALG_FILE_PREFIX: /backups\nPGHOST: db1\nWALG_GS_PREFIX: gs://x\n",
			nil, []string{"repo: file:///backups/pgvault/main", "not carried over: WALG_GS_PREFIX = gs://x"}, true},
		{"walg gs bad prefix", translate.WALG, "WALG_GS_PREFIX: s3://x\n", nil, []string{"REVIEW: the backups went to WALG_GS_PREFIX s3://x (not gs://bucket/path)"}, true},
		{"walg azure government cloud with sas", translate.WALG, "WALG_AZ_PREFIX: azure://pgc/x\nAZURE_STORAGE_ACCOUNT: acct\nAZURE_STORAGE_SAS_TOKEN: sv=hunter2\nAZURE_ENVIRONMENT_NAME: AzureUSGovernmentCloud\n",
			nil, []string{"repo: azure://pgc/x/pgvault/main?account=acct&endpoint=https://acct.blob.core.usgovcloudapi.net", "AZURE_STORAGE_SAS_TOKEN = <secret not copied> — set AZURE_STORAGE_SAS_TOKEN"}, true},
		{"walg azure without account", translate.WALG, "WALG_AZ_PREFIX: azure://pgc/x\nAZURE_CLIENT_ID: 0000\n",
			nil, []string{"repo: azure://pgc/x/pgvault/main\n", "REVIEW: no AZURE_STORAGE_ACCOUNT", "AZURE_CLIENT_ID = 0000 — the default Azure credential chain"}, true},
		{"walg swift", translate.WALG, "WALG_SWIFT_PREFIX: swift://pg/prod\nOS_AUTH_URL: https://keystone.example:5000/v3\nOS_REGION_NAME: RegionOne\nOS_USERNAME: walg\nOS_PASSWORD: hunter2\nOS_PROJECT_NAME: dba\nOS_IDENTITY_API_VERSION: \"3\"\n",
			nil, []string{"repo: swift://pg/prod/pgvault/main?auth_url=https://keystone.example:5000/v3&region=RegionOne&auth_version=3",
				"Swift credentials: set OS_USERNAME=walg, OS_PASSWORD (the OS_PASSWORD, not copied), OS_PROJECT_NAME=dba in the agent's environment", "OS_PASSWORD = <secret not copied> — set OS_PASSWORD"}, true},
		{"walg nested", translate.WALG, `{"WALG_S3_PREFIX": {"a": 1}}`, translate.ErrSyntax, nil, false},
		{"walg nothing", translate.WALG, `{"WALG_UPLOAD_CONCURRENCY": "4"}`, translate.ErrNoSites, nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := translate.Translate(tt.tool, translate.Source{Path: "in", Data: []byte(tt.in)}, nil, translate.Options{})
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range tt.want {
				if !strings.Contains(string(res.YAML), w) {
					t.Errorf("output lacks %q:\n%s", w, res.YAML)
				}
			}
			if strings.Contains(string(res.YAML), "pw@") || strings.Contains(string(res.YAML), "hunter2") {
				t.Errorf("password in output")
			}
			if tt.parses {
				if _, err := agent.Parse(res.YAML, "/etc/pgvault/pgvault.yaml"); err != nil {
					t.Errorf("agent.Parse: %v\n%s", err, res.YAML)
				}
			}
		})
	}
}

func TestSyntaxErrorLine(t *testing.T) {
	_, err := translate.Translate(translate.PgBackRest, translate.Source{Path: "pgbackrest.conf", Data: []byte("[global]\n# c\nnot an option\n")}, nil, translate.Options{})
	if err == nil || err.Error() != `pgbackrest.conf:3: "not an option" is neither an option (key=value) nor a [section]` {
		t.Fatalf("err = %v", err)
	}
}

func TestParseTool(t *testing.T) {
	for in, want := range map[string]translate.Tool{"pghoard": translate.Pghoard, "pgBackRest": translate.PgBackRest, "wal-g": translate.WALG, "Barman": translate.Barman} {
		if got, err := translate.ParseTool(in); err != nil || got != want {
			t.Errorf("ParseTool(%q) = %q, %v", in, got, err)
		}
	}
	if _, err := translate.ParseTool("bacula"); !errors.Is(err, translate.ErrUnknownTool) {
		t.Errorf("err = %v", err)
	}
}

// pghoard's monitoring keys carry over as the agent's keys of the same
// names; what the agent would refuse stays a comment, and the output
// always loads.
func TestPghoardMonitoring(t *testing.T) {
	tests := []struct {
		name  string
		top   string // top-level keys besides backup_sites
		want  []string
		check func(*agent.Config) bool
	}{
		{"statsd as pghoard documents it",
			`"statsd": {"host": "10.0.0.9", "port": 9125, "format": "datadog", "tags": {"env": "prod", "n": 3, "b": true}}`,
			[]string{"host: 10.0.0.9", "format: datadog", `n: "3"`, "b: \"True\"", "pgvault.* / pgvault_*"},
			func(c *agent.Config) bool {
				s := c.Statsd
				return s != nil && s.Addr() == "10.0.0.9:9125" && s.Format == "datadog" && s.Tags["env"] == "prod" && s.Tags["n"] == "3"
			}},
		{"statsd empty object takes pghoard's defaults", `"statsd": {}`,
			[]string{"host: 127.0.0.1   # pghoard's default", "port: 8125   # pghoard's default"},
			func(c *agent.Config) bool {
				return c.Statsd != nil && c.Statsd.Addr() == "127.0.0.1:8125" && c.Statsd.Format == "telegraf"
			}},
		{"statsd unknown format and site tag", `"statsd": {"format": "DataDog", "tags": {"site": "x", "dc": "eu1"}, "prefix": "p"}`,
			[]string{"not carried over: statsd.format = DataDog — the agent takes telegraf or datadog",
				"not carried over: statsd.tags.site = x", "dc: eu1", "not carried over: statsd.prefix = p"},
			func(c *agent.Config) bool {
				return c.Statsd != nil && c.Statsd.Format == "telegraf" && len(c.Statsd.Tags) == 1
			}},
		{"statsd turned off by a null host", `"statsd": {"host": null}`,
			[]string{"not carried over: statsd = {host: null} — a null host turned pghoard's statsd off"},
			func(c *agent.Config) bool { return c.Statsd == nil }},
		{"statsd bad port", `"statsd": {"port": 70000}`,
			[]string{"not carried over: statsd = {port: 70000}"},
			func(c *agent.Config) bool { return c.Statsd == nil }},
		{"statsd not an object", `"statsd": "127.0.0.1:8125"`,
			[]string{"not carried over: statsd = 127.0.0.1:8125"},
			func(c *agent.Config) bool { return c.Statsd == nil }},
		{"pushgateway reserved and bad tags", `"pushgateway": {"endpoint": "https://pg.example:9091", "tags": {"job": "x", "site": "y", "2dc": "z", "dc": "eu1"}, "instance": "i"}`,
			[]string{"endpoint: https://pg.example:9091", "not carried over: pushgateway.tags.job = x", "not carried over: pushgateway.tags.site = y",
				"not carried over: pushgateway.tags.2dc = z — not a Prometheus label name", "dc: eu1", "not carried over: pushgateway.instance = i"},
			func(c *agent.Config) bool {
				p := c.Pushgateway
				return p != nil && p.Endpoint == "https://pg.example:9091" && len(p.Tags) == 1 && p.Tags["dc"] == "eu1"
			}},
		{"pushgateway without endpoint", `"pushgateway": {"tags": {"dc": "eu1"}}`,
			[]string{"no endpoint: pghoard pushed nothing without one"},
			func(c *agent.Config) bool { return c.Pushgateway == nil }},
		{"pushgateway without scheme", `"pushgateway": {"endpoint": "pg.example:9091"}`,
			[]string{"not carried over: pushgateway = {endpoint: pg.example:9091} — the agent needs the Pushgateway's http:// or https:// URL"},
			func(c *agent.Config) bool { return c.Pushgateway == nil }},
		{"pushgateway password not copied", `"pushgateway": {"endpoint": "http://u:hunter2@pg.example:9091"}`,
			[]string{"endpoint: http://u@pg.example:9091", "REVIEW: the password in pghoard's pushgateway.endpoint was not copied"},
			func(c *agent.Config) bool {
				return c.Pushgateway != nil && c.Pushgateway.Endpoint == "http://u@pg.example:9091"
			}},
		{"syslog on a udp pair with a facility number", `"syslog": true, "syslog_address": ["logs.example", 514], "syslog_facility": 16`,
			[]string{"syslog: true", "syslog_address: udp://logs.example:514", "syslog_facility: local0   # pghoard's facility number 16"},
			func(c *agent.Config) bool {
				return c.Syslog && c.SyslogAddress == "udp://logs.example:514" && c.SyslogFacility == "local0"
			}},
		{"syslog values the agent refuses", `"syslog": "yes", "syslog_address": "log.sock", "syslog_facility": "security"`,
			[]string{"not carried over: syslog = yes", "not carried over: syslog_address = log.sock — not an absolute socket path",
				"not carried over: syslog_facility = security"},
			func(c *agent.Config) bool {
				return !c.Syslog && c.SyslogAddress == "/dev/log" && c.SyslogFacility == "local2"
			}},
		{"syslog null is off", `"syslog": null, "syslog_address": "/run/systemd/journal/syslog", "syslog_facility": "daemon"`,
			[]string{"syslog: false", "syslog_address: /run/systemd/journal/syslog", "syslog_facility: daemon"},
			func(c *agent.Config) bool {
				return !c.Syslog && c.SyslogAddress == "/run/systemd/journal/syslog" && c.SyslogFacility == "daemon"
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := `{"backup_sites": {"a": {"nodes": ["host=h"]}}, ` + tt.top + `}`
			res, err := translate.Translate(translate.Pghoard, translate.Source{Path: "in", Data: []byte(in)}, nil, translate.Options{})
			if err != nil {
				t.Fatal(err)
			}
			out := string(res.YAML)
			for _, w := range tt.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			if strings.Contains(out, "hunter2") || strings.Contains(out, "coming change") {
				t.Errorf("output holds a password or an outdated note:\n%s", out)
			}
			cfg, err := agent.Parse(res.YAML, "/etc/pgvault/pgvault.yaml")
			if err != nil {
				t.Fatalf("agent.Parse: %v\n%s", err, out)
			}
			if !tt.check(cfg) {
				t.Errorf("config = statsd %+v pushgateway %+v syslog %v %q %q\n%s",
					cfg.Statsd, cfg.Pushgateway, cfg.Syslog, cfg.SyslogAddress, cfg.SyslogFacility, out)
			}
		})
	}
}
