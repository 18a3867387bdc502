package translate

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// Barman: barman.conf, an INI file read by Python's ConfigParser. The
// [barman] section holds global options (and defaults of server options);
// every other section, there or in the *.conf files of
// configuration_files_directory, is a server: a site.

var barmanDialect = iniDialect{delims: "=:", continuation: true, lowerKeys: true}

var barmanReasons = map[string]string{
	"description":                 "",
	"ssh_command":                 "pgvault connects with the PostgreSQL protocol, not SSH",
	"create_slot":                 "the agent creates its slot when it is missing",
	"parallel_jobs":               "pgvault chooses its parallelism itself",
	"reuse_backup":                "every pgvault backup stores only chunks the repository lacks",
	"network_compression":         "pgvault compresses what it stores, not the connection",
	"archiver_batch_size":         "",
	"streaming_archiver_name":     "the agent's streamer is named by application_name",
	"streaming_backup_name":       "the agent's backups are named `<application_name> backup`",
	"wal_retention_policy":        "the agent keeps exactly the WAL the kept backups need",
	"compression":                 "pgvault always compresses with zstd (compression_level, default 1)",
	"custom_compression_filter":   "pgvault always compresses with zstd",
	"custom_decompression_filter": "pgvault always compresses with zstd",
	"path_prefix":                 "pgvault needs no pg_basebackup or pg_receivewal; drills and synthetic backups take pg_ctl and postgres from drill.pg_bin / synthetic.pg_bin",
	"last_backup_maximum_age":     "the agent's schedule takes a backup every interval_hours; pgvault_last_backup_timestamp_seconds monitors it",
	"backup_options":              "",
	"basebackup_retry_times":      "the agent retries a failed backup after 30 s, doubling up to 30 min",
	"basebackup_retry_sleep":      "the agent retries a failed backup after 30 s, doubling up to 30 min",
	"check_timeout":               "",
	"backup_directory":            "the repository is a new location (repo)",
	"wals_directory":              "the repository is a new location (repo)",
	"incoming_wals_directory":     "`pgvault wal push` stores into the repository directly",
	"streaming_wals_directory":    "the agent's streamer stores into the repository directly",
	"errors_directory":            "",
	"recovery_options":            "`pgvault restore` writes the recovery settings",
	"post_backup_script":          "hooks are not supported: watch the state file or /metrics",
	"pre_backup_script":           "hooks are not supported: watch the state file or /metrics",
	"post_archive_script":         "hooks are not supported: watch the state file or /metrics",
	"pre_archive_script":          "hooks are not supported: watch the state file or /metrics",
	"primary_ssh_command":         "pgvault connects with the PostgreSQL protocol, not SSH",
}

// barmanGlobalOnly are [barman] options that are not server defaults.
var barmanGlobalOnly = map[string]bool{
	"barman_home": true, "barman_user": true, "log_file": true, "log_level": true,
	"configuration_files_directory": true, "barman_lock_directory": true, "log_format": true,
}

// barmanIncludeDir is the configuration_files_directory of barman.conf.
func barmanIncludeDir(src Source) (string, error) {
	sections, err := parseINI(src.Path, src.Data, barmanDialect)
	if err != nil {
		return "", err
	}
	for _, s := range sections {
		if s.name == "barman" {
			v, _ := s.get("configuration_files_directory")
			return v, nil
		}
	}
	return "", nil
}

func fromBarman(src Source, extra []Source, opts Options) (*output, error) {
	sections, err := parseINI(src.Path, src.Data, barmanDialect)
	if err != nil {
		return nil, err
	}
	seen := map[string]*iniSection{}
	for _, s := range sections {
		seen[s.name] = s
	}
	for _, e := range extra {
		more, err := parseINI(e.Path, e.Data, barmanDialect)
		if err != nil {
			return nil, err
		}
		for _, s := range more {
			if first, dup := seen[s.name]; dup {
				return nil, &SyntaxError{File: e.Path, Line: s.line, Msg: fmt.Sprintf("server [%s] already defined in %s line %d", s.name, first.file, first.line)}
			}
			seen[s.name] = s
			sections = append(sections, s)
		}
	}
	global := seen["barman"]
	if global == nil {
		global = &iniSection{name: "barman"}
	}
	home, ok := global.get("barman_home")
	if !ok || home == "" {
		home = "/var/lib/barman"
	}
	o := &output{}
	for _, s := range sections {
		if s.name == "barman" {
			continue
		}
		site := o.addSite(s.name)
		o.barmanSite(site, s, global, home, opts)
	}
	for _, op := range global.options {
		switch {
		case op.key == "log_level":
			if l, ok := logLevel(op.value); ok {
				o.top.set("log_level", l, "")
			} else {
				o.top.notCarried("log_level", op.value, "use debug, info, warn or error")
			}
		case op.key == "barman_home":
			// Used for the repositories.
		case op.key == "configuration_files_directory":
			// Read by TranslateFile.
		case op.key == "log_file":
			o.top.notCarried(op.key, op.value, "the agent logs to stderr (the journal under systemd)")
		case op.key == "barman_user":
			o.top.notCarried(op.key, op.value, "run the agent as this user with systemd's User= (docs/how-to/run-the-agent.md)")
		case barmanGlobalOnly[op.key]:
			o.top.notCarried(op.key, describe(op.key, op.value), "Barman's own setting")
		}
		// Server defaults are reported in each site.
	}
	return o, nil
}

var (
	redundancyRe = regexp.MustCompile(`(?i)^\s*redundancy\s+(\d+)\s*$`)
	windowRe     = regexp.MustCompile(`(?i)^\s*recovery\s+window\s+of\s+(\d+)\s+(day|days|week|weeks|month|months)\s*$`)
)

func (o *output) barmanSite(s *siteOut, sec, global *iniSection, home string, opts Options) {
	b := &s.b
	// The server's options, over the [barman] defaults.
	val := map[string]string{}
	var order []string
	for _, src := range []*iniSection{global, sec} {
		for _, op := range src.options {
			if src == global && barmanGlobalOnly[op.key] {
				continue
			}
			if _, ok := val[op.key]; !ok {
				order = append(order, op.key)
			}
			val[op.key] = op.value
		}
	}
	done := map[string]bool{}
	get := func(k string) (string, bool) {
		v, ok := val[k]
		done[k] = true
		return v, ok
	}
	if d, ok := get("description"); ok && d != "" {
		b.note("Barman: %s", d)
	}

	// Nodes.
	conninfo, _ := get("conninfo")
	streaming, hasStreaming := get("streaming_conninfo")
	var nodes []string
	var pwWhere []string
	if conninfo != "" {
		ci, had, err := withoutPassword(conninfo)
		if err != nil {
			b.notCarried("conninfo", "<not shown: it may hold a password>", err.Error())
		} else {
			nodes = append(nodes, ci)
			if had {
				pwWhere = append(pwWhere, "conninfo")
			}
		}
	}
	if hasStreaming && streaming != "" {
		ci, had, err := withoutPassword(streaming)
		switch {
		case err != nil:
			b.notCarried("streaming_conninfo", "<not shown: it may hold a password>", err.Error())
		case len(nodes) == 0:
			nodes = append(nodes, ci)
		case ci != nodes[0]:
			b.notCarried("streaming_conninfo", ci, "pgvault uses one conninfo per node for queries and streaming (it adds replication=true): conninfo is used")
		}
		if err == nil && had {
			pwWhere = append(pwWhere, "streaming_conninfo")
		}
	}
	if len(nodes) == 0 {
		b.note("REVIEW: the server has no usable conninfo: this one is a placeholder")
		nodes = []string{"host=/var/run/postgresql user=postgres dbname=postgres"}
	}
	b.setList("pg", nodes, "Barman's conninfo")
	if len(pwWhere) > 0 {
		o.pgPasswordFile(s, opts, "["+cleanComment(sec.name)+"] "+strings.Join(pwWhere, ", "))
	}

	// Repository: Barman keeps backups on its own host.
	b.note("repo: "+newRepoNote, "Barman")
	b.set("repo", fileRepo(home, s.name), "")
	o.passwordFile(s, opts)

	// WAL: streaming_archiver (replication slot) or archiver (archive_command).
	stream, _ := get("streaming_archiver")
	archiver, _ := get("archiver")
	st, _ := pgbrBool(stream)
	ar, _ := pgbrBool(archiver)
	switch {
	case st:
		b.set("mode", "stream", "Barman's streaming_archiver")
		if ar {
			b.notCarried("archiver", archiver, "the agent keeps WAL one way: streaming (archive_command can be turned off)")
		}
	case ar:
		archiveNote(b, "barman-wal-archive or rsync to Barman's incoming folder")
		b.set("mode", "archive", "Barman's archiver")
	default:
		b.set("mode", "stream", "")
	}
	if slot, ok := get("slot_name"); ok && slot != "" {
		if slotNameRe.MatchString(slot) {
			b.set("slot", slot, "")
		} else {
			b.notCarried("slot_name", slot, "not a valid replication slot name")
		}
	}
	if v, ok := get("active"); ok {
		if a, ok := pgbrBool(v); ok {
			b.set("active", a, "")
		}
	}
	bc, _ := get("backup_compression")
	if lv, ok := get("backup_compression_level"); ok {
		n, err := strconv.Atoi(lv)
		if bc == "zstd" && err == nil && n >= 1 && n <= 19 {
			b.set("compression_level", n, "zstd, as backup_compression_level")
		} else {
			b.notCarried("backup_compression_level", lv, "a level of another algorithm (pgvault takes zstd levels 1 to 19)")
		}
	}
	if bc != "" && bc != "zstd" && bc != "none" {
		b.notCarried("backup_compression", bc, "pgvault always compresses with zstd")
	}

	// Base backups.
	bb := b.child("basebackup")
	scheduleNote(bb, "Barman", "barman backup "+cleanComment(sec.name))
	bb.set("interval_hours", 24, "")
	if v, ok := get("immediate_checkpoint"); ok {
		if f, ok := pgbrBool(v); ok {
			bb.set("fast_checkpoint", f, "immediate_checkpoint")
		}
	}
	method, _ := get("backup_method")
	switch method {
	case "", "rsync":
		if method == "rsync" {
			bb.note("backup_method rsync copied the data directory over SSH: the agent has PostgreSQL send it (method stream)")
		}
		bb.set("method", "stream", "")
	case "postgres":
		bb.set("method", "stream", "Barman's backup_method postgres")
	case "local-rsync":
		bb.set("method", "local", "Barman's backup_method local-rsync")
	default:
		bb.notCarried("backup_method", method, "unknown method: method auto chooses local or stream")
	}
	if v, ok := get("bandwidth_limit"); ok {
		n, err := strconv.Atoi(v)
		switch {
		case err == nil && n == 0:
		case err == nil && n >= 32 && n <= 1048576 && method != "local-rsync":
			bb.set("max_rate_kb", n, "bandwidth_limit")
		default:
			bb.notCarried("bandwidth_limit", v, "max_rate_kb takes 32 to 1048576 kB/s, with method stream")
		}
	}

	// Retention.
	rt := b.child("retention")
	minRed := -1
	if v, ok := get("minimum_redundancy"); ok {
		if n, err := strconv.Atoi(v); err == nil && n >= 0 {
			minRed = n
		} else {
			rt.notCarried("minimum_redundancy", v, typeNote("a whole number"))
		}
	}
	if v, ok := get("retention_policy"); ok && v != "" {
		if m := redundancyRe.FindStringSubmatch(v); m != nil {
			n, _ := strconv.Atoi(m[1])
			rt.set("basebackup_count", n, "REDUNDANCY "+m[1])
		} else if m := windowRe.FindStringSubmatch(v); m != nil {
			n, _ := strconv.Atoi(m[1])
			days := n * map[byte]int{'d': 1, 'w': 7, 'm': 31}[strings.ToLower(m[2])[0]]
			rt.set("basebackup_count", 0, "no count limit: the age rule below decides")
			rt.set("basebackup_age_days_max", days+1, cleanComment(v)+", plus the day of the backup the window starts from")
			if minRed < 1 {
				minRed = 1
			}
		} else {
			rt.notCarried("retention_policy", v, "use REDUNDANCY N or RECOVERY WINDOW OF N DAYS|WEEKS|MONTHS")
		}
	} else {
		rt.note("no retention_policy: Barman kept every backup; pgvault keeps 2 unless basebackup_count says otherwise")
	}
	if minRed >= 0 {
		rt.set("basebackup_count_min", minRed, "minimum_redundancy")
	}

	for _, k := range order {
		if done[k] {
			continue
		}
		reason, known := barmanReasons[k]
		if reason == "" {
			reason = "a Barman option pgvault has no equivalent for"
			if !known && isSecret(k) {
				reason = "secrets are never copied"
			}
		}
		b.notCarried(k, describe(k, val[k]), reason)
	}
}
