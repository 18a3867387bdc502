package translate

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// WAL-G: a flat JSON or YAML object (.walg.json, or the file given with
// --config) of the same WALG_*, AWS_*, SSH_* and PG* names as its
// environment variables. It describes one cluster: one site.

var walgReasons = map[string]string{
	"WALG_DELTA_MAX_STEPS":          "every pgvault backup is a full backup that stores only new chunks: no delta chains",
	"WALG_DELTA_ORIGIN":             "every pgvault backup is a full backup that stores only new chunks: no delta chains",
	"WALG_USE_WAL_DELTA":            "every pgvault backup is a full backup that stores only new chunks: no delta chains",
	"WALG_UPLOAD_CONCURRENCY":       "pgvault chooses its parallelism itself",
	"WALG_DOWNLOAD_CONCURRENCY":     "pgvault chooses its parallelism itself",
	"WALG_UPLOAD_DISK_CONCURRENCY":  "pgvault chooses its parallelism itself",
	"WALG_UPLOAD_QUEUE":             "pgvault chooses its parallelism itself",
	"WALG_TAR_SIZE_THRESHOLD":       "pgvault stores chunks in packs of its own size",
	"WALG_NETWORK_RATE_LIMIT":       "pgvault limits the server's sending instead (basebackup.max_rate_kb)",
	"WALG_DISK_RATE_LIMIT":          "pgvault limits the server's sending instead (basebackup.max_rate_kb)",
	"WALG_PREVENT_WAL_OVERWRITE":    "pgvault's WAL catalogue decides what a second push of one segment does (docs/reference/cli.md, wal push)",
	"WALG_VERIFY_PAGE_CHECKSUMS":    "`pgvault verify --boot` runs pg_amcheck on a booted backup",
	"WALG_STORE_ALL_CORRUPT_BLOCKS": "`pgvault verify --boot` runs pg_amcheck on a booted backup",
	"WALG_UPLOAD_WAL_METADATA":      "pgvault keeps its own WAL catalogue",
	"WALG_LOG_LEVEL":                "the agent logs to stderr; log_level sets its level",
	"WALG_SENTINEL_USER_DATA":       "`pgvault backup --label` names a backup",
	"WALG_S3_STORAGE_CLASS":         "pgvault writes with the bucket's default storage class",
	"WALG_S3_SSE":                   "server-side encryption is the bucket's setting; pgvault encrypts every object itself",
	"WALG_S3_SSE_KMS_ID":            "server-side encryption is the bucket's setting; pgvault encrypts every object itself",
	"WALG_CSE_KMS_ID":               "pgvault encrypts with the repository password",
	"WALG_SLOTNAME":                 "used by `wal-g wal-receive`; with mode: stream the agent's slot is the site's slot",
	"AWS_PROFILE":                   "set AWS_PROFILE in the agent's environment",
	"AWS_SHARED_CREDENTIALS_FILE":   "set it in the agent's environment",
	"AWS_ROLE_ARN":                  "set it in the agent's environment",
	"AWS_ROLE_SESSION_NAME":         "set it in the agent's environment",
	"GCS_CONTEXT_TIMEOUT":           "pgvault times its requests itself",
	"GCS_MAX_RETRIES":               "pgvault retries failed requests itself",
	"GCS_MAX_CHUNK_SIZE":            "pgvault stores chunks in packs of its own size",
	"GCS_NORMALIZE_PREFIX":          "the repo URL's prefix is used as written",
	"GCS_ENCRYPTION_KEY":            "pgvault encrypts every object with the repository password (no customer-supplied GCS key)",
	"WALG_AZURE_BUFFER_SIZE":        "pgvault sizes its uploads itself",
	"WALG_AZURE_MAX_BUFFERS":        "pgvault sizes its uploads itself",
	"AZURE_BUFFER_SIZE":             "pgvault sizes its uploads itself",
	"AZURE_MAX_BUFFERS":             "pgvault sizes its uploads itself",
	"PGPASSFILE":                    "libpq reads it from the agent's environment: set PGPASSFILE there, or use pg_password_file",
}

func fromWALG(src Source, opts Options) (*output, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(src.Data, &doc); err != nil {
		return nil, &SyntaxError{File: src.Path, Msg: "not JSON or YAML: " + strings.TrimPrefix(err.Error(), "yaml: ")}
	}
	o := &output{}
	if doc.Kind == 0 || len(doc.Content) == 0 {
		return o, nil
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return nil, &SyntaxError{File: src.Path, Line: root.Line, Msg: "not an object of WALG_* settings"}
	}
	cfg := map[string]string{}
	var order []string
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		if v.Kind == yaml.AliasNode && v.Alias != nil {
			v = v.Alias
		}
		if k.Kind != yaml.ScalarNode || v.Kind != yaml.ScalarNode {
			return nil, &SyntaxError{File: src.Path, Line: k.Line, Msg: fmt.Sprintf("%q: WAL-G settings are single values", k.Value)}
		}
		key := strings.ToUpper(strings.TrimSpace(k.Value))
		if _, dup := cfg[key]; dup {
			return nil, &SyntaxError{File: src.Path, Line: k.Line, Msg: fmt.Sprintf("%s given twice", key)}
		}
		cfg[key] = v.Value
		order = append(order, key)
	}
	// WALE_* are WAL-G's older names.
	for _, k := range []string{"S3_PREFIX", "FILE_PREFIX", "GS_PREFIX", "AZ_PREFIX", "SWIFT_PREFIX"} {
		if v, ok := cfg["WALE_"+k]; ok {
			if _, has := cfg["WALG_"+k]; !has {
				cfg["WALG_"+k] = v
				order = append(order, "WALG_"+k)
			}
			delete(cfg, "WALE_"+k)
			order = remove(order, "WALE_"+k)
		}
	}
	storage := false
	for _, k := range []string{"WALG_S3_PREFIX", "WALG_FILE_PREFIX", "WALG_SSH_PREFIX", "WALG_GS_PREFIX", "WALG_AZ_PREFIX", "WALG_SWIFT_PREFIX", "PGHOST"} {
		storage = storage || cfg[k] != ""
	}
	if !storage {
		return o, nil
	}
	s := o.addSite(opts.Site)
	o.walgSite(s, cfg, order, opts)
	return o, nil
}

func remove(list []string, v string) []string {
	out := list[:0]
	for _, e := range list {
		if e != v {
			out = append(out, e)
		}
	}
	return out
}

func (o *output) walgSite(s *siteOut, cfg map[string]string, order []string, opts Options) {
	b := &s.b
	done := map[string]bool{}
	get := func(k string) string {
		done[k] = true
		return cfg[k]
	}
	if s.name == "main" {
		b.note("WAL-G configures one cluster; it is the site \"main\" (`--site NAME` names it otherwise)")
	}

	// PostgreSQL: libpq's environment names.
	params := []param{}
	for _, kv := range [][2]string{{"PGHOST", "host"}, {"PGPORT", "port"}, {"PGUSER", "user"}, {"PGDATABASE", "dbname"}, {"PGSSLMODE", "sslmode"}, {"PGAPPNAME", "application_name"}} {
		if v := get(kv[0]); v != "" {
			params = append(params, param{kv[1], v})
		}
	}
	if len(params) == 0 || params[0].key != "host" {
		params = append([]param{{"host", "/var/run/postgresql"}}, params...)
	}
	b.set("pg", buildConninfo(params), "WAL-G's PGHOST, PGPORT, PGUSER...")
	if _, ok := cfg["PGPASSWORD"]; ok {
		done["PGPASSWORD"] = true
		o.pgPasswordFile(s, opts, "PGPASSWORD")
	}

	// Storage.
	switch {
	case cfg["WALG_S3_PREFIX"] != "":
		u, err := url.Parse(get("WALG_S3_PREFIX"))
		if err != nil || u.Scheme != "s3" || u.Host == "" {
			placeholderRepo(s, "WALG_S3_PREFIX "+cleanComment(cfg["WALG_S3_PREFIX"])+" (not s3://bucket/path)")
			break
		}
		l := s3Loc{bucket: u.Host, prefix: u.Path, endpoint: get("AWS_ENDPOINT"), region: get("AWS_REGION")}
		if f, ok := pgbrBool(get("AWS_S3_FORCE_PATH_STYLE")); ok && f {
			l.pathStyle = true
		}
		b.note("repo: "+newRepoNote, "WAL-G")
		b.set("repo", l.url(s.name), "")
		b.note("S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the agent's environment (or use ~/.aws or an instance role)")
	case cfg["WALG_FILE_PREFIX"] != "":
		b.note("repo: "+newRepoNote, "WAL-G")
		b.set("repo", fileRepo(get("WALG_FILE_PREFIX"), s.name), "")
	case cfg["WALG_SSH_PREFIX"] != "":
		raw := get("WALG_SSH_PREFIX")
		u, err := url.Parse(raw)
		if err != nil || u.Host == "" {
			placeholderRepo(s, "WALG_SSH_PREFIX "+cleanComment(raw)+" (not ssh://host/path)")
			break
		}
		l := sftpLoc{host: u.Hostname(), dir: u.Path, user: get("SSH_USERNAME"), identity: get("SSH_PRIVATE_KEY_PATH")}
		if p, err := strconv.Atoi(get("SSH_PORT")); err == nil {
			l.port = p
		} else if p, err := strconv.Atoi(u.Port()); err == nil {
			l.port = p
		}
		if u.User != nil && l.user == "" {
			l.user = u.User.Username()
		}
		b.note("repo: "+newRepoNote, "WAL-G")
		b.set("repo", l.url(s.name), "")
	case cfg["WALG_GS_PREFIX"] != "":
		raw := get("WALG_GS_PREFIX")
		u, err := url.Parse(raw)
		if err != nil || u.Scheme != "gs" || u.Host == "" {
			placeholderRepo(s, "WALG_GS_PREFIX "+cleanComment(raw)+" (not gs://bucket/path)")
			break
		}
		objectRepo(s, "WAL-G", objLoc{scheme: "gs", container: u.Host, prefix: u.Path}, s.name, "WALG_GS_PREFIX "+cleanComment(raw))
		// The variable holds a key file's path: the agent reads the same file.
		if p := get("GOOGLE_APPLICATION_CREDENTIALS"); p != "" {
			b.note(gcsCredsNote, p)
		} else {
			b.note(gcsADCNote)
		}
	case cfg["WALG_AZ_PREFIX"] != "":
		raw := get("WALG_AZ_PREFIX")
		u, err := url.Parse(raw)
		if err != nil || u.Scheme != "azure" || u.Host == "" {
			placeholderRepo(s, "WALG_AZ_PREFIX "+cleanComment(raw)+" (not azure://container/path)")
			break
		}
		account := get("AZURE_STORAGE_ACCOUNT")
		l := objLoc{scheme: "azure", container: u.Host, prefix: u.Path, params: [][2]string{{"account", account}}}
		if env, ok := cfg["AZURE_ENVIRONMENT_NAME"]; ok {
			if suffix, known := azureCloudSuffix(env); known {
				get("AZURE_ENVIRONMENT_NAME")
				l.params = append(l.params, [2]string{"endpoint", azureEndpoint(account, suffix)})
			}
		}
		if account == "" {
			// pgvault takes it from AZURE_STORAGE_ACCOUNT or a connection string too.
			b.note("REVIEW: no AZURE_STORAGE_ACCOUNT: add ?account=NAME to repo, or set AZURE_STORAGE_ACCOUNT in the agent's environment")
		}
		objectRepo(s, "WAL-G", l, s.name, "WALG_AZ_PREFIX "+cleanComment(raw))
		// The keys stay "not carried over" lines (below): only their names are written.
		switch {
		case cfg["AZURE_STORAGE_ACCESS_KEY"] != "":
			b.note(azureKeyNote, "AZURE_STORAGE_ACCESS_KEY")
		case cfg["AZURE_STORAGE_SAS_TOKEN"] != "":
			b.note(azureSASNote, "AZURE_STORAGE_SAS_TOKEN")
		default:
			b.note(azureChainNote)
		}
	case cfg["WALG_SWIFT_PREFIX"] != "":
		raw := get("WALG_SWIFT_PREFIX")
		u, err := url.Parse(raw)
		if err != nil || u.Scheme != "swift" || u.Host == "" {
			placeholderRepo(s, "WALG_SWIFT_PREFIX "+cleanComment(raw)+" (not swift://container/path)")
			break
		}
		auth := get("OS_AUTH_URL")
		if auth == "" {
			auth = get("ST_AUTH")
		}
		l := objLoc{scheme: "swift", container: u.Host, prefix: u.Path, params: [][2]string{{"auth_url", auth}, {"region", get("OS_REGION_NAME")}}}
		for _, k := range []string{"OS_IDENTITY_API_VERSION", "ST_AUTH_VERSION"} {
			if v, ok := swiftAuthVersion(cfg[k]); ok {
				get(k)
				l.params = append(l.params, [2]string{"auth_version", v})
				break
			}
		}
		objectRepo(s, "WAL-G", l, s.name, "WALG_SWIFT_PREFIX "+cleanComment(raw))
		// The agent's Swift library reads the same OS_* and ST_* names.
		var vars []envVar
		for _, k := range []string{"OS_USERNAME", "OS_USER_ID", "OS_PASSWORD", "OS_TENANT_NAME", "OS_TENANT_ID", "OS_PROJECT_NAME", "OS_PROJECT_ID",
			"OS_USER_DOMAIN_NAME", "OS_USER_DOMAIN_ID", "OS_PROJECT_DOMAIN_NAME", "OS_PROJECT_DOMAIN_ID", "OS_DOMAIN_NAME", "OS_DOMAIN_ID",
			"OS_ENDPOINT_TYPE", "ST_USER", "ST_KEY"} {
			if _, ok := cfg[k]; !ok {
				continue
			}
			if isSecret(k) || k == "OS_PASSWORD" {
				vars = append(vars, envVar{name: k, from: k, secret: true})
				continue // stays a "not carried over" line below
			}
			vars = append(vars, envVar{name: k, value: get(k)})
		}
		envNote(b, "Swift credentials", vars)
	default:
		b.note("REVIEW: no WALG_*_PREFIX: a local placeholder repository")
		b.set("repo", fileRepo(DefaultRepoRoot, s.name), "")
	}
	o.passwordFile(s, opts)

	archiveNote(b, "wal-g wal-push %p")
	b.set("mode", "archive", "or stream: the agent streams WAL over a replication slot, with no archive_command")
	switch m := get("WALG_COMPRESSION_METHOD"); m {
	case "", "zstd":
	default:
		b.notCarried("WALG_COMPRESSION_METHOD", m, "pgvault always compresses with zstd (compression_level, default 1)")
	}

	bb := b.child("basebackup")
	scheduleNote(bb, "WAL-G", "wal-g backup-push $PGDATA")
	bb.set("interval_hours", 24, "")
	if d := get("PGDATA"); d != "" {
		bb.set("data_directory", d, "PGDATA: for local backups on this host")
	}
	rt := b.child("retention")
	rt.note("WAL-G deletes old backups when cron runs `wal-g delete retain N`: set basebackup_count to that N (pgvault keeps 2 by default)")

	for _, k := range order {
		if done[k] {
			continue
		}
		reason := walgReasons[k]
		switch {
		case k == "AZURE_STORAGE_ACCESS_KEY":
			reason = "set AZURE_STORAGE_KEY (pgvault's name for it) in the agent's environment"
		case k == "AZURE_STORAGE_SAS_TOKEN", k == "OS_PASSWORD", k == "ST_KEY":
			reason = "set " + k + " in the agent's environment"
		case strings.HasPrefix(k, "AZURE_") && reason == "":
			reason = "the default Azure credential chain reads it from the agent's environment: set it there"
		case strings.HasPrefix(k, "AWS_") && isSecret(k), k == "AWS_SESSION_TOKEN":
			reason = "credentials go in the agent's environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)"
		case strings.Contains(k, "LIBSODIUM") || strings.Contains(k, "PGP") || strings.Contains(k, "GPG"):
			reason = "pgvault encrypts every repository with its own password: put a NEW one in password_file"
		case k == "SSH_PASSWORD":
			reason = "pgvault logs in to sftp with a key (?identity= or ssh-agent), not a password"
		case reason == "" && isSecret(k):
			reason = "secrets are never copied"
		case reason == "":
			reason = "a WAL-G setting pgvault has no equivalent for"
		}
		b.notCarried(k, describe(k, cfg[k]), reason)
	}
}
