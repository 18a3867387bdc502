package translate

import (
	"fmt"
	"net"
	"strconv"
	"strings"
)

// pghoard: one JSON object (pghoard.json). Site keys map one to one onto
// the agent's fields, which took pghoard's names and meanings.

// pghoardIgnored are keys pgvault has no use for, with the reason.
var pghoardIgnored = map[string]string{
	"hash_algorithm":                 "pgvault identifies data by a keyed hash of its own",
	"tar_executable":                 "pgvault restores without tar",
	"restore_prefetch":               "`pgvault wal fetch --prefetch N` in restore_command sets it",
	"transfer":                       "pgvault sizes its upload workers itself",
	"pg_receivexlog":                 "the agent streams WAL itself, without pg_receivewal or a spool disk",
	"basebackup_chunks_in_progress":  "pgvault streams backups into the repository without temporary chunks",
	"basebackup_chunk_size":          "pgvault streams backups into the repository without temporary chunks",
	"basebackup_compression_threads": "pgvault compresses in parallel by itself",
	"basebackup_threads":             "pgvault compresses in parallel by itself",
	"proxy_info":                     "pgvault's object store clients take the standard HTTPS_PROXY/HTTP_PROXY environment",
	"pg_bin_directory":               "pgvault needs no pg_basebackup or pg_receivewal; drills and synthetic backups take pg_ctl and postgres from drill.pg_bin / synthetic.pg_bin",
}

func fromPghoard(src Source, opts Options) (*output, error) {
	cfg, err := parseJSONObject(src.Path, src.Data)
	if err != nil {
		return nil, err
	}
	o := &output{}
	sitesV, ok := cfg["backup_sites"]
	if !ok {
		return o, nil
	}
	sites, ok := sitesV.(map[string]any)
	if !ok {
		return nil, &SyntaxError{File: src.Path, Msg: "backup_sites is not an object of sites"}
	}
	// Keys pghoard reads at the top level but also per site: the top-level
	// value is every site's default.
	topCompression := cfg["compression"]
	for _, name := range sortedKeys(sites) {
		sv, ok := sites[name].(map[string]any)
		if !ok {
			return nil, &SyntaxError{File: src.Path, Msg: fmt.Sprintf("backup_sites.%s is not an object", name)}
		}
		s := o.addSite(name)
		if _, has := sv["compression"]; !has && topCompression != nil {
			sv["compression"] = topCompression
		}
		if err := o.pghoardSite(s, name, sv, cfg, opts); err != nil {
			return nil, fmt.Errorf("%s: backup_sites.%s: %w", src.Path, name, err)
		}
	}
	o.pghoardTop(cfg)
	return o, nil
}

func (o *output) pghoardSite(s *siteOut, name string, sv, top map[string]any, opts Options) error {
	b := &s.b
	done := map[string]bool{}
	use := func(k string) (any, bool) {
		v, ok := sv[k]
		done[k] = true
		return v, ok
	}

	// nodes -> pg
	var nodes []string
	var pwWhere []string
	slot := ""
	if v, ok := use("nodes"); ok {
		list, ok := v.([]any)
		if !ok {
			list = []any{v}
		}
		for i, n := range list {
			ci, hadPw, nodeSlot, err := pghoardNode(n)
			if err != nil {
				b.notCarried(fmt.Sprintf("nodes[%d]", i), "<not shown: it may hold a password>", err.Error())
				continue
			}
			if hadPw {
				pwWhere = append(pwWhere, fmt.Sprintf("nodes[%d]", i))
			}
			if nodeSlot != "" {
				if slot != "" && slot != nodeSlot {
					b.notCarried(fmt.Sprintf("nodes[%d].slot", i), nodeSlot, "pgvault uses one slot per site: "+slot)
				} else {
					slot = nodeSlot
				}
			}
			nodes = append(nodes, ci)
		}
	}
	if len(nodes) == 0 {
		b.note("REVIEW: no usable node in the source: this conninfo is a placeholder")
		nodes = []string{"host=/var/run/postgresql user=postgres dbname=postgres"}
	}
	b.setList("pg", nodes, "pghoard's nodes, tried in order")
	if len(pwWhere) > 0 {
		o.pgPasswordFile(s, opts, "backup_sites."+cleanComment(name)+"."+strings.Join(pwWhere, ", "))
	}

	// object_storage -> repo
	prefix := name
	if v, ok := use("prefix"); ok {
		if p, ok := asString(v); ok && strings.TrimSpace(p) != "" {
			prefix = strings.Trim(p, "/")
		}
	}
	storage, _ := use("object_storage")
	o.pghoardRepo(s, storage, prefix, top)
	o.passwordFile(s, opts)
	for _, k := range []string{"encryption_key_id", "encryption_keys"} {
		if _, ok := use(k); ok {
			b.notCarried(k, secretNotCopied, "pgvault encrypts every repository with its password (password_file), not RSA keys")
		}
	}

	// active_backup_mode -> mode
	mode := "stream"
	if v, ok := use("active_backup_mode"); ok {
		m, _ := asString(v)
		switch m {
		case "pg_receivexlog", "walreceiver":
		case "archive_command":
			mode = "archive"
			archiveNote(b, "pghoard_postgres_command")
		default:
			b.notCarried("active_backup_mode", describe("active_backup_mode", v),
				"the agent keeps WAL by streaming (stream) or archive_command (archive); a standalone backup is `pgvault backup --standalone`")
		}
	}
	b.set("mode", mode, "pghoard's active_backup_mode")
	if slot != "" {
		if slotNameRe.MatchString(slot) {
			b.set("slot", slot, "")
		} else {
			b.notCarried("nodes[].slot", slot, "not a valid replication slot name")
		}
	}
	if v, ok := use("active"); ok {
		if a, ok := asBool(v); ok {
			b.set("active", a, "")
		} else {
			b.notCarried("active", describe("active", v), typeNote("true or false"))
		}
	}
	if v, ok := use("maintenance_mode_file"); ok {
		if p, ok := asString(v); ok && p != "" {
			b.set("maintenance_mode_file", p, "")
		}
	}
	if v, ok := use("upload_retries_warning_limit"); ok {
		if n, ok := asInt(v); ok && n >= 1 {
			b.set("upload_retries_warning_limit", n, "")
		} else {
			b.notCarried("upload_retries_warning_limit", describe("", v), typeNote("a number of 1 or more"))
		}
	}
	if v, ok := use("compression"); ok {
		pghoardCompression(b, v)
	}

	// basebackup
	bb := b.child("basebackup")
	if v, ok := use("basebackup_interval_hours"); ok {
		if v == nil {
			bb.set("interval_hours", 0, "null in pghoard: no scheduled backups")
		} else if n, ok := asInt(v); ok && n >= 0 {
			bb.set("interval_hours", n, "")
		} else {
			bb.notCarried("basebackup_interval_hours", describe("", v), typeNote("a number of hours"))
		}
	}
	hv, hok := use("basebackup_hour")
	mv, mok := use("basebackup_minute")
	h, hgood := asInt(hv)
	m, mgood := asInt(mv)
	switch {
	case hok && mok && hgood && mgood && h >= 0 && h <= 23 && m >= 0 && m <= 59:
		bb.set("hour", h, "UTC")
		bb.set("minute", m, "")
	case hok || mok:
		if hok {
			bb.notCarried("basebackup_hour", describe("", hv), "needs a valid basebackup_minute too (pghoard ignored it as well)")
		}
		if mok {
			bb.notCarried("basebackup_minute", describe("", mv), "needs a valid basebackup_hour too (pghoard ignored it as well)")
		}
	}
	if v, ok := use("basebackup_mode"); ok {
		switch bm, _ := asString(v); bm {
		case "basic", "pipe":
			bb.set("method", "stream", "pghoard's basebackup_mode "+bm)
		case "local-tar", "delta", "local-tar-delta-stats":
			bb.set("method", "local", "pghoard's basebackup_mode "+bm)
			if bm != "local-tar" {
				bb.note("pghoard's delta mode uploaded changed files only; every pgvault backup stores only the chunks the repository lacks")
			}
		default:
			bb.notCarried("basebackup_mode", describe("", v), "unknown mode: method auto chooses local or stream")
		}
	}
	if v, ok := use("pg_data_directory"); ok {
		if p, ok := asString(v); ok && p != "" {
			bb.set("data_directory", p, "for local backups")
		}
	}

	// retention
	rt := b.child("retention")
	for _, k := range []string{"basebackup_count", "basebackup_count_min", "basebackup_age_days_max"} {
		v, ok := use(k)
		if !ok || v == nil {
			continue
		}
		if n, ok := asInt(v); ok && n >= 0 {
			rt.set(k, n, "")
		} else {
			rt.notCarried(k, describe("", v), typeNote("a whole number of 0 or more"))
		}
	}

	for _, k := range sortedKeys(sv) {
		if done[k] {
			continue
		}
		reason, known := pghoardIgnored[k]
		if !known {
			reason = "not a pghoard site key this translator knows"
		}
		b.notCarried(k, describe(k, sv[k]), reason)
	}
	return nil
}

// pghoardNode turns a node (an object of libpq keys, a conninfo string or
// a postgres:// URL) into a conninfo without its password.
func pghoardNode(n any) (conninfo string, hadPassword bool, slot string, err error) {
	switch n := n.(type) {
	case string:
		ci, had, err := withoutPassword(n)
		return ci, had, "", err
	case map[string]any:
		var params []param
		for _, k := range sortedKeys(n) {
			v, ok := asString(n[k])
			if !ok {
				if b, isBool := n[k].(bool); isBool {
					v = strconv.FormatBool(b)
				} else {
					return "", false, "", fmt.Errorf("%s is not a string or number", k)
				}
			}
			switch k {
			case "password":
				hadPassword = true
			case "slot":
				slot = v
			default:
				params = append(params, param{k, v})
			}
		}
		if len(params) == 0 {
			return "", false, "", fmt.Errorf("no connection parameters")
		}
		return buildConninfo(params), hadPassword, slot, nil
	}
	return "", false, "", fmt.Errorf("a node is an object of libpq keys, a conninfo string or a postgres:// URL")
}

func pghoardCompression(b *block, v any) {
	c, ok := v.(map[string]any)
	if !ok {
		b.notCarried("compression", describe("compression", v), typeNote("an object"))
		return
	}
	alg, _ := asString(c["algorithm"])
	level, hasLevel := asInt(c["level"])
	switch {
	case alg == "zstd" && hasLevel && level >= 1:
		if level > 19 {
			b.note("pghoard's zstd level %d is above pgvault's 19", level)
			level = 19
		}
		b.set("compression_level", level, "zstd, as pghoard's compression.level")
	case alg == "zstd" || alg == "":
	default:
		b.notCarried("compression.algorithm", alg, "pgvault always compresses with zstd (compression_level, default 1, is about as fast as snappy)")
	}
	for _, k := range sortedKeys(c) {
		if k == "algorithm" || k == "level" {
			continue
		}
		b.notCarried("compression."+k, describe(k, c[k]), "pgvault compresses in parallel by itself")
	}
}

// pghoardRepo writes the repository URL for a site's object_storage.
func (o *output) pghoardRepo(s *siteOut, storage any, prefix string, top map[string]any) {
	b := &s.b
	st, _ := storage.(map[string]any)
	kind, _ := asString(st["storage_type"])
	done := map[string]bool{"storage_type": true}
	// carried are keys written into a comment in full (never secret);
	// secretReason says where a secret the agent needs goes instead.
	carried := map[string]bool{}
	secretReason := map[string]string{}
	get := func(k string) string {
		done[k] = true
		v, _ := asString(st[k])
		return v
	}
	if p := get("prefix"); p != "" {
		prefix = strings.Trim(p, "/")
	}
	switch {
	case storage == nil:
		root, _ := asString(top["backup_location"])
		if root == "" {
			b.note("REVIEW: no object_storage and no backup_location: a local placeholder repository")
			root = DefaultRepoRoot
		} else {
			b.note("repo: "+newRepoNote, "pghoard")
		}
		b.set("repo", fileRepo(root, prefix), "")
	case kind == "local":
		dir := get("directory")
		if dir == "" {
			placeholderRepo(s, "a local object_storage without a directory")
			break
		}
		b.note("repo: "+newRepoNote, "pghoard")
		b.set("repo", fileRepo(dir, prefix), "")
	case kind == "s3":
		l := s3Loc{bucket: get("bucket_name"), region: get("region")}
		host, port := get("host"), get("port")
		secure, hasSecure := asBool(st["is_secure"])
		done["is_secure"] = true
		if host != "" {
			scheme := "https"
			if hasSecure && !secure {
				scheme = "http"
			}
			hp := host
			if port != "" {
				hp = net.JoinHostPort(host, port)
			}
			l.endpoint = scheme + "://" + hp
			l.pathStyle = true
		}
		if l.bucket == "" {
			placeholderRepo(s, "S3 without a bucket_name")
			break
		}
		b.note("repo: "+newRepoNote, "pghoard")
		b.set("repo", l.url(prefix), "")
		b.note("S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the agent's environment (or use ~/.aws or an instance role)")
	case kind == "sftp":
		// pghoard's sftp paths are relative to the login folder: /~/ in pgvault's URL.
		l := sftpLoc{host: get("server"), user: get("username"), dir: "~"}
		if p, ok := asInt(st["port"]); ok {
			l.port = p
		}
		done["port"] = true
		if l.host == "" {
			placeholderRepo(s, "sftp without a server")
			break
		}
		b.note("repo: "+newRepoNote, "pghoard")
		b.set("repo", l.url(prefix), "")
		b.note("sftp: pgvault logs in with a key (?identity=/path/to/key or ssh-agent), not a password")
	case kind == "google":
		l := objLoc{scheme: "gs", container: get("bucket_name"), params: [][2]string{{"project", get("project_id")}}}
		if l.container == "" {
			placeholderRepo(s, "Google Cloud Storage without a bucket_name")
			break
		}
		objectRepo(s, "pghoard", l, prefix, "Google Cloud Storage bucket "+l.container)
		switch cf := get("credential_file"); {
		case cf != "":
			// A path, not a key: the agent reads the same file.
			carried["credential_file"] = true
			b.note(gcsCredsNote, cf)
		case st["credentials"] != nil:
			secretReason["credentials"] = "write the key to a file (chmod 600) and set GOOGLE_APPLICATION_CREDENTIALS to its path in the agent's environment"
		default:
			b.note(gcsADCNote)
		}
	case kind == "azure":
		account := get("account_name")
		container := get("bucket_name")
		if container == "" {
			container = get("container_name") // pghoard's older name
		}
		l := objLoc{scheme: "azure", container: container, params: [][2]string{{"account", account}}}
		if host := get("host"); host != "" {
			// pghoard (rohmu) puts the account in the path of a custom
			// endpoint, as Azurite wants.
			secure, hasSecure := asBool(st["is_secure"])
			done["is_secure"] = true
			scheme := "https"
			if hasSecure && !secure {
				scheme = "http"
			}
			hp := host
			if p, ok := asInt(st["port"]); ok {
				hp = net.JoinHostPort(host, strconv.Itoa(p))
			}
			done["port"] = true
			l.params = append(l.params, [2]string{"endpoint", scheme + "://" + hp + "/" + account})
		} else if cloud, ok := st["azure_cloud"]; ok {
			c, _ := asString(cloud)
			if suffix, known := azureCloudSuffix(c); known {
				done["azure_cloud"] = true
				l.params = append(l.params, [2]string{"endpoint", azureEndpoint(account, suffix)})
			}
		}
		if container == "" || account == "" {
			placeholderRepo(s, "Azure Blob Storage without an account_name and bucket_name")
			break
		}
		objectRepo(s, "pghoard", l, prefix, "Azure container "+container)
		switch {
		case st["account_key"] != nil:
			b.note(azureKeyNote, "object_storage.account_key")
			secretReason["account_key"] = "set AZURE_STORAGE_KEY in the agent's environment"
		case st["sas_token"] != nil:
			b.note(azureSASNote, "object_storage.sas_token")
			secretReason["sas_token"] = "set AZURE_STORAGE_SAS_TOKEN in the agent's environment"
		default:
			b.note(azureChainNote)
		}
	case kind == "swift":
		l := objLoc{scheme: "swift", container: get("container_name"), params: [][2]string{
			{"auth_url", get("auth_url")}, {"region", get("region_name")}}}
		if v := get("auth_version"); v != "" {
			if n, ok := swiftAuthVersion(v); ok {
				l.params = append(l.params, [2]string{"auth_version", n})
			} else {
				done["auth_version"] = false
			}
		}
		if l.container == "" {
			placeholderRepo(s, "OpenStack Swift without a container_name")
			break
		}
		objectRepo(s, "pghoard", l, prefix, "Swift container "+l.container)
		// pghoard's keystone keys, as the OS_* variables the agent's
		// Swift library reads.
		var vars []envVar
		for _, kv := range [][2]string{{"user", "OS_USERNAME"}, {"user_id", "OS_USER_ID"}, {"key", "OS_PASSWORD"},
			{"tenant_name", "OS_TENANT_NAME"}, {"tenant_id", "OS_TENANT_ID"}, {"project_name", "OS_PROJECT_NAME"}, {"project_id", "OS_PROJECT_ID"},
			{"user_domain_name", "OS_USER_DOMAIN_NAME"}, {"user_domain_id", "OS_USER_DOMAIN_ID"},
			{"project_domain_name", "OS_PROJECT_DOMAIN_NAME"}, {"project_domain_id", "OS_PROJECT_DOMAIN_ID"},
			{"domain_name", "OS_DOMAIN_NAME"}, {"domain_id", "OS_DOMAIN_ID"}, {"endpoint_type", "OS_ENDPOINT_TYPE"}} {
			if _, ok := st[kv[0]]; !ok {
				continue
			}
			v := get(kv[0])
			if isSecret(kv[0]) {
				vars = append(vars, envVar{name: kv[1], from: "object_storage." + kv[0], secret: true})
				secretReason[kv[0]] = "set " + kv[1] + " in the agent's environment"
				continue
			}
			carried[kv[0]] = true
			vars = append(vars, envVar{name: kv[1], value: v})
		}
		envNote(b, "Swift credentials", vars)
	default:
		placeholderRepo(s, "object_storage type "+strings.TrimSpace(kind))
	}
	for _, k := range sortedKeys(st) {
		if carried[k] || done[k] && !isSecret(k) {
			continue
		}
		reason := "pgvault's " + kind + " backend has no such setting"
		switch {
		case secretReason[k] != "":
			reason = secretReason[k]
		case k == "segment_size":
			reason = "pgvault's packs are small enough to need no Swift segments"
		case k == "azure_cloud":
			reason = "not a cloud this translator knows: add ?endpoint=https://ACCOUNT.blob.SUFFIX to repo by hand"
		case k == "proxy_info":
			reason = "set HTTPS_PROXY in the agent's environment"
		case isSecret(k) && kind == "s3":
			reason = "credentials go in the agent's environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)"
		case isSecret(k):
			reason = "secrets are never copied"
		case k == "encrypted":
			reason = "server-side encryption is the bucket's setting; pgvault encrypts every object itself"
		case k == "is_verify_tls":
			reason = "pgvault always verifies TLS"
		}
		b.notCarried("object_storage."+k, describe(k, st[k]), reason)
	}
}

// pghoardTop translates the top-level keys.
func (o *output) pghoardTop(cfg map[string]any) {
	t := &o.top
	done := map[string]bool{"backup_sites": true, "compression": true, "backup_location": true}
	use := func(k string) (any, bool) {
		v, ok := cfg[k]
		done[k] = true
		return v, ok
	}
	addr, hasAddr := use("http_address")
	port, hasPort := use("http_port")
	if hasAddr || hasPort {
		a, _ := asString(addr)
		if !hasAddr {
			a = "127.0.0.1"
		}
		p, _ := asString(port)
		if !hasPort {
			p = "16000"
		}
		if _, err := strconv.Atoi(p); err == nil {
			t.child("http").set("listen", net.JoinHostPort(a, p), "pghoard's http_address and http_port: /metrics, /status, /healthz")
		} else {
			t.notCarried("http_port", describe("", port), typeNote("a port number"))
		}
	}
	if v, ok := use("json_state_file_path"); ok {
		if p, ok := asString(v); ok && p != "" {
			t.set("state_file", p, "pghoard's json_state_file_path")
		}
	}
	if v, ok := use("alert_file_dir"); ok {
		if p, ok := asString(v); ok && p != "" {
			t.set("alert_dir", p, "pghoard's alert_file_dir")
		}
	} else if loc, ok := asString(cfg["backup_location"]); ok && loc != "" {
		t.set("alert_dir", loc, "pghoard's default alert_file_dir: backup_location")
	}
	if v, ok := use("maintenance_mode_file"); ok {
		if p, ok := asString(v); ok && p != "" {
			t.set("maintenance_mode_file", p, "")
		}
	}
	if v, ok := use("log_level"); ok {
		s, _ := asString(v)
		if l, ok := logLevel(s); ok {
			t.set("log_level", l, "")
		} else {
			t.notCarried("log_level", describe("", v), "use debug, info, warn or error")
		}
	}
	if v, ok := use("upload_retries_warning_limit"); ok {
		if n, ok := asInt(v); ok && n >= 1 {
			t.set("upload_retries_warning_limit", n, "")
		} else {
			t.notCarried("upload_retries_warning_limit", describe("", v), typeNote("a number of 1 or more"))
		}
	}
	pghoardMonitoring(t, use)
	for _, k := range sortedKeys(cfg) {
		if done[k] {
			continue
		}
		switch {
		case k == "prometheus":
			t.notCarried(k, describe(k, cfg[k]), "the agent always serves Prometheus metrics at http.listen /metrics; tags are not supported")
		case pghoardIgnored[k] != "":
			t.notCarried(k, describe(k, cfg[k]), pghoardIgnored[k])
		default:
			t.notCarried(k, describe(k, cfg[k]), "not a pghoard key this translator knows")
		}
	}
}
