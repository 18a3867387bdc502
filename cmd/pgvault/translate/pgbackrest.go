package translate

import (
	"fmt"
	"net"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// pgBackRest: pgbackrest.conf, an INI file. [global] holds defaults,
// [global:COMMAND] defaults of one command, [STANZA] one cluster and
// [STANZA:COMMAND] its command options. Each stanza becomes a site.

var pgbrDialect = iniDialect{
	delims: "=",
	repeatable: func(k string) bool {
		switch k {
		case "db-include", "db-exclude", "exclude", "recovery-option", "tablespace-map", "link-map", "pg-version-force":
			return true
		}
		return false
	},
}

// pgbrReasons are why options have no pgvault equivalent.
var pgbrReasons = map[string]string{
	"archive-async":           "`pgvault wal push` stores each segment before it returns (and stream mode needs no archive_command)",
	"spool-path":              "`pgvault wal push` needs no spool folder",
	"archive-push-queue-max":  "`pgvault wal push` keeps no queue",
	"archive-get-queue-max":   "`pgvault wal fetch --prefetch N` in restore_command sets the read-ahead",
	"archive-timeout":         "the agent checks WAL with wal_check instead",
	"archive-check":           "the agent always keeps the WAL a backup needs (standalone backups: `pgvault backup --standalone`)",
	"archive-copy":            "the agent always keeps the WAL a backup needs (standalone backups: `pgvault backup --standalone`)",
	"process-max":             "pgvault chooses its parallelism itself",
	"backup-standby":          "the agent backs up from the first node in pg that answers: list a standby first to back up from it",
	"delta":                   "every pgvault backup stores only chunks the repository lacks; `pgvault restore --delta` is the restore side",
	"expire-auto":             "the agent applies retention after every backup",
	"resume":                  "an interrupted pgvault backup keeps the chunks it stored; the next backup reuses them",
	"log-level-console":       "the agent logs to stderr (the journal under systemd); log_level sets its level",
	"log-level-file":          "the agent logs to stderr (the journal under systemd); log_level sets its level",
	"log-level-stderr":        "the agent logs to stderr (the journal under systemd); log_level sets its level",
	"log-path":                "the agent logs to stderr (the journal under systemd)",
	"lock-path":               "pgvault keeps its locks in the repository",
	"buffer-size":             "pgvault sizes its buffers itself",
	"checksum-page":           "`pgvault verify --boot` runs pg_amcheck on a booted backup",
	"link-all":                "pgvault restores tablespaces where the backup had them, or as `restore --tablespace-map` says",
	"manifest-save-threshold": "pgvault stores its manifest when the backup ends",
	"stanza":                  "each stanza is a site",
	"config-path":             "pgvault reads one configuration file",
	"repo":                    "pgvault backs a site up to one repository",
}

var pgbrIndexed = regexp.MustCompile(`^(repo|pg)(\d+)-(.+)$`)

func fromPgBackRest(src Source, opts Options) (*output, error) {
	sections, err := parseINI(src.Path, src.Data, pgbrDialect)
	if err != nil {
		return nil, err
	}
	byName := map[string]*iniSection{}
	var stanzas []string
	for _, s := range sections {
		byName[s.name] = s
		if !strings.Contains(s.name, ":") && s.name != "global" {
			stanzas = append(stanzas, s.name)
		}
	}
	o := &output{}
	for _, name := range stanzas {
		// Later sections win: [global], [global:backup], [stanza], [stanza:backup].
		opts2 := map[string]iniOption{}
		var order []string
		for _, sec := range []string{"global", "global:backup", name, name + ":backup"} {
			s := byName[sec]
			if s == nil {
				continue
			}
			for _, op := range s.options {
				if _, seen := opts2[op.key]; !seen {
					order = append(order, op.key)
				}
				opts2[op.key] = op
			}
		}
		site := o.addSite(name)
		o.pgbrSite(site, name, opts2, order, opts)
		for _, s := range sections {
			if strings.HasPrefix(s.name, name+":") && s.name != name+":backup" {
				for _, op := range s.options {
					site.b.notCarried("["+s.name+"] "+op.key, describe(op.key, op.value), "options of one pgBackRest command: pgvault has none of its own")
				}
			}
		}
	}
	for _, s := range sections {
		if strings.HasPrefix(s.name, "global:") && s.name != "global:backup" {
			for _, op := range s.options {
				o.top.notCarried("["+s.name+"] "+op.key, describe(op.key, op.value), "options of one pgBackRest command: pgvault has none of its own")
			}
		}
	}
	return o, nil
}

func pgbrBool(v string) (bool, bool) {
	switch strings.ToLower(v) {
	case "y", "yes", "true", "on", "1":
		return true, true
	case "n", "no", "false", "off", "0":
		return false, true
	}
	return false, false
}

func (o *output) pgbrSite(s *siteOut, name string, opt map[string]iniOption, order []string, opts Options) {
	b := &s.b
	done := map[string]bool{}
	get := func(k string) (string, bool) {
		op, ok := opt[k]
		done[k] = true
		return op.value, ok
	}

	// Nodes: pg1..pg256, in index order.
	var idx []int
	seenIdx := map[int]bool{}
	repoIdx := 0
	for _, k := range order {
		m := pgbrIndexed.FindStringSubmatch(k)
		if m == nil {
			continue
		}
		n, err := strconv.Atoi(m[2])
		if err != nil {
			continue
		}
		if m[1] == "pg" && !seenIdx[n] {
			seenIdx[n] = true
			idx = append(idx, n)
		}
		if m[1] == "repo" && (repoIdx == 0 || n < repoIdx) {
			repoIdx = n
		}
	}
	sort.Ints(idx)
	var nodes []string
	dataDir := ""
	for _, n := range idx {
		p := fmt.Sprintf("pg%d-", n)
		host, hasHost := get(p + "host")
		socket, _ := get(p + "socket-path")
		port, _ := get(p + "port")
		user, hasUser := get(p + "user")
		db, hasDB := get(p + "database")
		path, _ := get(p + "path")
		var params []param
		switch {
		case hasHost:
			params = append(params, param{"host", host})
		case socket != "":
			params = append(params, param{"host", socket})
		default:
			params = append(params, param{"host", "/var/run/postgresql"})
		}
		if !hasHost && dataDir == "" && path != "" {
			dataDir = path
		}
		if port != "" {
			params = append(params, param{"port", port})
		}
		if !hasUser {
			user = "postgres"
		}
		params = append(params, param{"user", user})
		if !hasDB {
			db = "postgres"
		}
		params = append(params, param{"dbname", db})
		nodes = append(nodes, buildConninfo(params))
		if hasHost && path != "" {
			b.note("pg%d-path = %s is on %s: the agent has PostgreSQL send it over the replication protocol (basebackup.method auto)", n, cleanComment(path), cleanComment(host))
		}
	}
	if len(nodes) == 0 {
		b.note("REVIEW: the stanza names no pg1-path or pg1-host: this conninfo is a placeholder")
		nodes = []string{"host=/var/run/postgresql user=postgres dbname=postgres"}
	}
	b.setList("pg", nodes, "pgBackRest's pg1-*, pg2-*...: libpq finds the password in ~/.pgpass or PGPASSWORD")

	// Repository.
	if repoIdx == 0 {
		repoIdx = 1
	}
	rp := fmt.Sprintf("repo%d-", repoIdx)
	typ, _ := get(rp + "type")
	if typ == "" {
		typ = "posix"
	}
	root, hasRoot := get(rp + "path")
	if !hasRoot {
		root = "/var/lib/pgbackrest"
	}
	switch typ {
	case "posix", "cifs":
		b.note("repo: "+newRepoNote, "pgBackRest")
		b.set("repo", fileRepo(root, name), "")
	case "s3":
		bucket, _ := get(rp + "s3-bucket")
		region, _ := get(rp + "s3-region")
		endpoint, _ := get(rp + "s3-endpoint")
		port, _ := get(rp + "storage-port")
		if port == "" {
			port, _ = get(rp + "s3-port")
		}
		uriStyle, _ := get(rp + "s3-uri-style")
		l := s3Loc{bucket: bucket, region: region, pathStyle: uriStyle == "path"}
		if endpoint != "" && !strings.HasSuffix(endpoint, ".amazonaws.com") {
			hp := endpoint
			if port != "" && port != "443" {
				hp = net.JoinHostPort(endpoint, port)
			}
			l.endpoint = "https://" + hp
		}
		if bucket == "" {
			placeholderRepo(s, "S3 without "+rp+"s3-bucket")
			break
		}
		b.note("repo: "+newRepoNote, "pgBackRest")
		l.prefix = root
		b.set("repo", l.url(name), "")
		b.note("S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the agent's environment (or use ~/.aws or an instance role)")
	case "sftp":
		host, _ := get(rp + "sftp-host")
		user, _ := get(rp + "sftp-host-user")
		key, _ := get(rp + "sftp-private-key-file")
		l := sftpLoc{host: host, user: user, dir: root, identity: key}
		if p, ok := get(rp + "sftp-host-port"); ok {
			l.port, _ = strconv.Atoi(p)
		}
		if host == "" {
			placeholderRepo(s, "sftp without "+rp+"sftp-host")
			break
		}
		b.note("repo: "+newRepoNote, "pgBackRest")
		b.set("repo", l.url(name), "")
	case "gcs":
		bucket, _ := get(rp + "gcs-bucket")
		l := objLoc{scheme: "gs", container: bucket, prefix: root}
		endpoint, _ := get(rp + "gcs-endpoint")
		if endpoint != "" && endpoint != "storage.googleapis.com" {
			if !strings.Contains(endpoint, "://") {
				if port, ok := get(rp + "storage-port"); ok && port != "443" {
					endpoint = net.JoinHostPort(endpoint, port)
				}
				endpoint = "https://" + endpoint
			}
			l.params = [][2]string{{"endpoint", endpoint}}
		}
		if bucket == "" {
			placeholderRepo(s, "Google Cloud Storage without "+rp+"gcs-bucket")
			break
		}
		if objectRepo(s, "pgBackRest", l, name, "Google Cloud Storage bucket "+bucket) && len(l.params) > 0 {
			b.note("REVIEW: pgvault sends no credentials to an endpoint= server (it is meant for an emulator such as fake-gcs-server): drop endpoint= if %s is Google's own", cleanComment(endpoint))
		}
		// repo1-gcs-key is a key file's path unless the key type says
		// otherwise: the agent can read the same file.
		switch kt, _ := get(rp + "gcs-key-type"); kt {
		case "", "service":
			if key, ok := get(rp + "gcs-key"); ok && key != "" {
				b.note(gcsCredsNote, key)
			} else {
				b.note(gcsADCNote)
			}
		default: // auto (the instance's service account) or token
			b.note(gcsADCNote)
		}
	case "azure":
		account, _ := get(rp + "azure-account")
		container, _ := get(rp + "azure-container")
		l := objLoc{scheme: "azure", container: container, prefix: root, params: [][2]string{{"account", account}}}
		// pgBackRest's endpoint is a host; uri-style=path puts the
		// account in the path (Azurite), host puts it in front.
		host, _ := get(rp + "storage-host")
		if host == "" {
			host, _ = get(rp + "azure-host") // pgBackRest's older name
		}
		endpoint, _ := get(rp + "azure-endpoint")
		port, _ := get(rp + "storage-port")
		if port == "" {
			port, _ = get(rp + "azure-port")
		}
		style, _ := get(rp + "azure-uri-style")
		hp := endpoint
		if host != "" {
			hp = host
		}
		if hp == "" {
			hp = "blob.core.windows.net"
		}
		if port != "" && port != "443" {
			hp = net.JoinHostPort(hp, port)
		}
		switch {
		case style == "path":
			l.params = append(l.params, [2]string{"endpoint", "https://" + hp + "/" + account})
		case hp != "blob.core.windows.net":
			l.params = append(l.params, [2]string{"endpoint", "https://" + account + "." + hp})
		}
		if account == "" || container == "" {
			placeholderRepo(s, "Azure Blob Storage without "+rp+"azure-account and "+rp+"azure-container")
			break
		}
		objectRepo(s, "pgBackRest", l, name, "Azure container "+container)
		// The key itself stays a "not carried over" line (below): only
		// its name is written.
		_, hasKey := opt[rp+"azure-key"]
		switch kt, _ := get(rp + "azure-key-type"); {
		case !hasKey || kt == "auto":
			b.note(azureChainNote)
		case kt == "sas":
			b.note(azureSASNote, rp+"azure-key")
		default:
			b.note(azureKeyNote, rp+"azure-key")
		}
	default:
		placeholderRepo(s, "repository type "+typ)
	}
	o.passwordFile(s, opts)
	if _, ok := get(rp + "cipher-pass"); ok {
		b.notCarried(rp+"cipher-pass", secretNotCopied, "pgvault encrypts every repository with its own password: put a NEW one in password_file")
	}
	if v, ok := get(rp + "cipher-type"); ok {
		b.notCarried(rp+"cipher-type", v, "pgvault always encrypts (AES-256-GCM)")
	}

	// Mode: pgBackRest archives through archive_command.
	archiveNote(b, "pgbackrest --stanza="+cleanComment(name)+" archive-push %p")
	b.set("mode", "archive", "or stream: the agent streams WAL over a replication slot, with no archive_command")

	// Compression.
	ct, hasCT := get("compress-type")
	cl, hasCL := get("compress-level")
	if hasCT && ct != "zst" {
		b.notCarried("compress-type", ct, "pgvault always compresses with zstd (compression_level, default 1)")
	}
	if hasCL {
		if n, err := strconv.Atoi(cl); err == nil && n >= 1 && n <= 19 && (ct == "zst") {
			b.set("compression_level", n, "zstd, as compress-level")
		} else {
			b.notCarried("compress-level", cl, "a level of another algorithm (pgvault takes zstd levels 1 to 19)")
		}
	}

	// Base backups: cron's job.
	bb := b.child("basebackup")
	scheduleNote(bb, "pgBackRest", "pgbackrest --stanza="+cleanComment(name)+" backup")
	bb.set("interval_hours", 24, "")
	if v, ok := get("start-fast"); ok {
		if f, ok := pgbrBool(v); ok {
			bb.set("fast_checkpoint", f, "start-fast")
		}
	}
	if dataDir != "" {
		bb.set("data_directory", dataDir, "pg1-path: for local backups on this host")
	}

	// Retention.
	rt := b.child("retention")
	full, hasFull := get(rp + "retention-full")
	ftype, _ := get(rp + "retention-full-type")
	if hasFull {
		n, err := strconv.Atoi(full)
		switch {
		case err != nil || n < 1:
			rt.notCarried(rp+"retention-full", full, typeNote("a number of 1 or more"))
		case ftype == "time":
			rt.set("basebackup_count", 0, "no count limit: the age rule below decides")
			rt.set("basebackup_age_days_max", n, rp+"retention-full with retention-full-type=time")
			rt.set("basebackup_count_min", 1, "")
		default:
			rt.set("basebackup_count", n, rp+"retention-full")
		}
	} else {
		rt.note("%sretention-full was not set (pgBackRest kept every full backup): pgvault keeps 2 unless basebackup_count says otherwise", rp)
	}
	for _, k := range []string{"retention-diff", "retention-incr"} {
		if v, ok := get(rp + k); ok {
			rt.notCarried(rp+k, v, "every pgvault backup is a full backup that stores only new chunks: there are no differential or incremental ones")
		}
	}
	for _, k := range []string{"retention-archive", "retention-archive-type", "retention-history"} {
		if v, ok := get(rp + k); ok {
			rt.notCarried(rp+k, v, "the agent keeps exactly the WAL the kept backups need")
		}
	}

	// Everything else.
	for _, k := range order {
		if done[k] {
			continue
		}
		op := opt[k]
		reason := pgbrReasons[k]
		if m := pgbrIndexed.FindStringSubmatch(k); m != nil {
			switch {
			case m[1] == "repo" && m[2] != strconv.Itoa(repoIdx):
				reason = fmt.Sprintf("pgvault backs a site up to one repository (repo%d above)", repoIdx)
			case m[1] == "repo" && otherRepoType(m[3], typ) != "":
				// [global] often holds one type's options that a stanza's
				// own repo1-type overrides.
				reason = fmt.Sprintf("an option of repo%s-type=%s; this stanza's repository is %s", m[2], otherRepoType(m[3], typ), typ)
			case m[1] == "repo" && m[3] == "azure-key" && opt[rp+"azure-key-type"].value == "sas":
				reason = "set AZURE_STORAGE_SAS_TOKEN in the agent's environment"
			case m[1] == "repo" && m[3] == "azure-key":
				reason = "set AZURE_STORAGE_KEY in the agent's environment"
			case m[1] == "repo" && m[3] == "gcs-key":
				reason = "a token expires: give the agent Application Default Credentials (GOOGLE_APPLICATION_CREDENTIALS) instead"
			case m[1] == "repo" && isSecret(m[3]) && strings.HasPrefix(m[3], "s3-"):
				reason = "credentials go in the agent's environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)"
			case m[1] == "repo" && strings.HasPrefix(m[3], "host"):
				reason = "pgvault writes to the repository storage itself, with no repository host"
			case m[1] == "pg" && strings.HasPrefix(m[3], "host"):
				reason = "pgvault connects with the PostgreSQL protocol, not SSH"
			case isSecret(m[3]):
				reason = "secrets are never copied"
			default:
				reason = "pgvault's repository has no such setting"
			}
		}
		if reason == "" {
			reason = "a pgBackRest option pgvault has no equivalent for"
		}
		b.notCarried(k, describe(k, op.value), reason)
	}
}

// otherRepoType is the repository type an option like "s3-bucket"
// belongs to when that is not typ, else "".
func otherRepoType(opt, typ string) string {
	for _, t := range []string{"s3", "gcs", "azure", "sftp"} {
		if strings.HasPrefix(opt, t+"-") && t != typ {
			return t
		}
	}
	return ""
}
