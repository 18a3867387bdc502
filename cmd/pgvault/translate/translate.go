package translate

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/pgvault/pgvault/repo/backend/all"
)

// Tool names a source tool.
type Tool string

// The tools whose configuration can be translated.
const (
	Pghoard    Tool = "pghoard"
	PgBackRest Tool = "pgbackrest"
	Barman     Tool = "barman"
	WALG       Tool = "walg"
)

// Tools lists them in the order the CLI names them.
var Tools = []Tool{Pghoard, PgBackRest, Barman, WALG}

// ErrUnknownTool is matched when the tool name is none of Tools.
var ErrUnknownTool = errors.New("unknown tool")

// ErrNoSites is matched when the source file configures no cluster.
var ErrNoSites = errors.New("no cluster configured")

// ParseTool checks a tool name (case-insensitive; "wal-g" is walg).
func ParseTool(s string) (Tool, error) {
	t := Tool(strings.ReplaceAll(strings.ToLower(strings.TrimSpace(s)), "-", ""))
	if slices.Contains(Tools, t) {
		return t, nil
	}
	return "", fmt.Errorf("%w %q: use pghoard, pgbackrest, barman or walg", ErrUnknownTool, s)
}

// DefaultSecretsDir is where the translated configuration points the
// password files it names.
const DefaultSecretsDir = "/etc/pgvault"

// DefaultRepoRoot holds placeholder repositories for sites whose storage
// pgvault cannot use.
const DefaultRepoRoot = "/var/lib/pgvault"

// Options tune a translation.
type Options struct {
	// Now is written in the header (zero: left out, for golden files).
	Now time.Time
	// SecretsDir is the folder of the password files the output names
	// (default DefaultSecretsDir).
	SecretsDir string
	// Site names the one site of a WAL-G configuration (default "main").
	Site string
}

// Source is one input file.
type Source struct {
	Path string
	Data []byte
}

// Result is a translation.
type Result struct {
	// YAML is the pgvault agent configuration, with comments.
	YAML []byte
	// Sites are the names of the sites it configures.
	Sites []string
	// NotCarried counts the settings left as "not carried over" comments.
	NotCarried int
	// Secrets lists the password files the operator must create.
	Secrets []string
}

// Translate turns main (and, for Barman, the server files of its
// configuration_files_directory in extra) into a pgvault configuration.
func Translate(tool Tool, main Source, extra []Source, opts Options) (*Result, error) {
	if opts.SecretsDir == "" {
		opts.SecretsDir = DefaultSecretsDir
	}
	if opts.Site == "" {
		opts.Site = "main"
	}
	var (
		out *output
		err error
	)
	switch tool {
	case Pghoard:
		out, err = fromPghoard(main, opts)
	case PgBackRest:
		out, err = fromPgBackRest(main, opts)
	case Barman:
		out, err = fromBarman(main, extra, opts)
	case WALG:
		out, err = fromWALG(main, opts)
	default:
		return nil, fmt.Errorf("%w %q", ErrUnknownTool, tool)
	}
	if err != nil {
		return nil, err
	}
	if len(out.sites) == 0 {
		return nil, fmt.Errorf("%s: %w: the file names no %s", main.Path, ErrNoSites, map[Tool]string{
			Pghoard: "backup_sites", PgBackRest: "stanza (a section other than [global])", Barman: "server section", WALG: "storage"}[tool])
	}
	return out.render(tool, main.Path, opts), nil
}

// TranslateFile reads path (and, for Barman, the *.conf files of the
// configuration_files_directory it names) and translates it.
func TranslateFile(tool Tool, path string, opts Options) (*Result, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read %s configuration: %w", tool, err)
	}
	main := Source{Path: path, Data: data}
	var extra []Source
	if tool == Barman {
		dir, err := barmanIncludeDir(main)
		if err != nil {
			return nil, err
		}
		if dir != "" {
			if !filepath.IsAbs(dir) {
				dir = filepath.Join(filepath.Dir(path), dir)
			}
			names, err := filepath.Glob(filepath.Join(dir, "*.conf"))
			if err != nil {
				return nil, fmt.Errorf("barman configuration_files_directory %s: %w", dir, err)
			}
			sort.Strings(names)
			for _, n := range names {
				d, err := os.ReadFile(n)
				if err != nil {
					return nil, fmt.Errorf("read barman server file: %w", err)
				}
				extra = append(extra, Source{Path: n, Data: d})
			}
		}
	}
	return Translate(tool, main, extra, opts)
}

// output is a translation before it is written out.
type output struct {
	top     block // top-level fields (http, state_file, ...)
	notes   []string
	sites   []*siteOut
	secrets []string
}

type siteOut struct {
	name string
	b    block
}

// addSite starts a site; name is made a valid pgvault site name.
func (o *output) addSite(name string) *siteOut {
	s := &siteOut{name: siteName(name)}
	for _, other := range o.sites {
		if other.name == s.name {
			s.name = fmt.Sprintf("%s-%d", s.name, len(o.sites)+1)
		}
	}
	if s.name != name {
		s.b.note("site %q renamed %s: pgvault site names hold letters, digits, '-' and '_'", cleanComment(name), s.name)
	}
	o.sites = append(o.sites, s)
	return s
}

var siteNameRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$`)

func siteName(name string) string {
	if siteNameRe.MatchString(name) {
		return name
	}
	var b strings.Builder
	for _, r := range name {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	s := strings.TrimLeft(b.String(), "_-")
	if s == "" {
		s = "site"
	}
	if len(s) > 63 {
		s = s[:63]
	}
	return s
}

var slotNameRe = regexp.MustCompile(`^[a-z0-9_]{1,63}$`)

func (o *output) render(tool Tool, source string, opts Options) *Result {
	var sb strings.Builder
	sb.WriteString("# pgvault agent configuration translated from " + cleanComment(string(tool)) + "'s " + cleanComment(source) + "\n")
	if !opts.Now.IsZero() {
		sb.WriteString("# by `pgvault compat translate` on " + opts.Now.UTC().Format(time.RFC3339) + ".\n")
	} else {
		sb.WriteString("# by `pgvault compat translate`.\n")
	}
	sb.WriteString("# REVIEW BEFORE USE: every setting that was not carried over is a\n")
	sb.WriteString("# \"not carried over\" comment where it would go. No secret was copied:\n")
	sb.WriteString("# create the password files named below (first line, chmod 600).\n")
	sb.WriteString("# Then: pgvault agent --check-config --config FILE; pgvault repo init\n")
	sb.WriteString("# for each site; pgvault doctor --config FILE. Fields: docs/reference/config.md\n")
	for _, n := range o.notes {
		sb.WriteString("# " + cleanComment(n) + "\n")
	}
	sb.WriteString("\nsites:\n")
	res := &Result{Secrets: o.secrets}
	for _, s := range o.sites {
		sb.WriteString("  " + quoteKey(s.name) + ":\n")
		s.b.write(&sb, 4)
		res.Sites = append(res.Sites, s.name)
		res.NotCarried += s.b.countNotCarried()
	}
	if len(o.top.items) > 0 {
		sb.WriteString("\n")
		o.top.write(&sb, 0)
		res.NotCarried += o.top.countNotCarried()
	}
	res.YAML = []byte(sb.String())
	return res
}

func (b *block) countNotCarried() int {
	n := 0
	for _, it := range b.items {
		if it.key == "" && strings.HasPrefix(it.comment, "not carried over:") {
			n++
		}
		if it.sub != nil {
			n += it.sub.countNotCarried()
		}
	}
	return n
}

// secretWords mark keys whose values are never written out.
var secretWords = []string{"pass", "secret", "key", "token", "private", "credential"}

func isSecret(key string) bool {
	k := strings.ToLower(key)
	for _, w := range secretWords {
		if strings.Contains(k, w) {
			return true
		}
	}
	return false
}

const secretNotCopied = "<secret not copied>"

// describe writes a value from the source file for a comment: secrets
// (by their key, also inside objects) are replaced, long values cut.
func describe(key string, v any) string {
	if isSecret(key) {
		return secretNotCopied
	}
	s := describeValue(v)
	if len(s) > 120 {
		s = s[:117] + "..."
	}
	return s
}

func describeValue(v any) string {
	switch v := v.(type) {
	case nil:
		return "null"
	case string:
		return v
	case map[string]any:
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var parts []string
		for _, k := range keys {
			parts = append(parts, k+": "+describe(k, v[k]))
		}
		return "{" + strings.Join(parts, ", ") + "}"
	case []any:
		var parts []string
		for _, e := range v {
			parts = append(parts, describeValue(e))
		}
		return "[" + strings.Join(parts, ", ") + "]"
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

// passwordFile adds the repository password_file of a site.
func (o *output) passwordFile(s *siteOut, opts Options) {
	p := filepath.Join(opts.SecretsDir, s.name+".pass")
	s.b.set("password_file", p, "the NEW repository's password (first line, chmod 600), or PGVAULT_SITE_"+envName(s.name)+"_PASSWORD")
	o.secrets = append(o.secrets, p)
}

// pgPasswordFile adds the pg_password_file of a site whose source held a
// PostgreSQL password (where says where).
func (o *output) pgPasswordFile(s *siteOut, opts Options, where string) {
	p := filepath.Join(opts.SecretsDir, s.name+".pgpass")
	s.b.note("the PostgreSQL password in %s was not copied: write it as the first line of %s (chmod 600), or set PGVAULT_SITE_%s_PGPASSWORD", where, p, envName(s.name))
	s.b.set("pg_password_file", p, "")
	o.secrets = append(o.secrets, p)
}

func envName(site string) string { return strings.ToUpper(strings.ReplaceAll(site, "-", "_")) }

// newRepoNote explains why the repository is a new folder.
const newRepoNote = "a NEW, empty location beside the old backups (pgvault cannot read %s's backups; keep them until pgvault's retention covers your recovery window): run `pgvault repo init` there"

// fileRepo is a file:// URL of root/pgvault/name.
func fileRepo(root, name string) string {
	p := path.Join(root, "pgvault", name)
	if !strings.HasPrefix(p, "/") {
		p = "/" + p
	}
	return (&url.URL{Scheme: "file", Path: p}).String()
}

// s3Repo builds an s3:// URL; prefix is joined with pgvault/name.
type s3Loc struct {
	bucket, prefix, endpoint, region string
	pathStyle, insecure              bool
}

func (l s3Loc) url(name string) string {
	u := &url.URL{Scheme: "s3", Host: l.bucket, Path: "/" + strings.TrimPrefix(path.Join(l.prefix, "pgvault", name), "/")}
	var q []string
	add := func(k, v string) {
		// Keep ':' and '/' readable (endpoint=https://host:9000), as the docs write it.
		q = append(q, k+"="+readableQuery(v))
	}
	if l.endpoint != "" {
		add("endpoint", l.endpoint)
	}
	if l.region != "" {
		add("region", l.region)
	}
	if l.pathStyle {
		add("path_style", "true")
	}
	if l.insecure {
		add("insecure", "true")
	}
	u.RawQuery = strings.Join(q, "&")
	return u.String()
}

type sftpLoc struct {
	host, user, dir, identity string
	port                      int
}

func (l sftpLoc) url(name string) string {
	u := &url.URL{Scheme: "sftp", Host: l.host, Path: "/" + strings.TrimPrefix(path.Join(l.dir, "pgvault", name), "/")}
	if l.port != 0 && l.port != 22 {
		u.Host = fmt.Sprintf("%s:%d", l.host, l.port)
	}
	if l.user != "" {
		u.User = url.User(l.user)
	}
	if l.identity != "" {
		u.RawQuery = "identity=" + readableQuery(l.identity)
	}
	return u.String()
}

// objLoc is a gs://, azure:// or swift:// location: the bucket or
// container, the old storage's prefix (joined with pgvault/<site>) and
// query parameters in order (empty values are left out).
type objLoc struct {
	scheme, container, prefix string
	params                    [][2]string
}

func (l objLoc) url(name string) string {
	u := &url.URL{Scheme: l.scheme, Host: l.container, Path: "/" + strings.TrimPrefix(path.Join("/", l.prefix, "pgvault", name), "/")}
	var q []string
	for _, p := range l.params {
		if p[1] != "" {
			q = append(q, p[0]+"="+readableQuery(p[1]))
		}
	}
	u.RawQuery = strings.Join(q, "&")
	return u.String()
}

// objectRepo sets the site's repo to l. The URL is checked with the
// repository URL parser the agent uses, so that a source value pgvault
// cannot take (an Azure container name Azure itself would refuse, an
// auth_url holding a password) becomes a REVIEW placeholder here rather
// than a configuration the agent refuses to load.
func objectRepo(s *siteOut, tool string, l objLoc, name, what string) bool {
	raw := l.url(name)
	if _, err := all.ParseURL(raw); err != nil {
		s.b.note("REVIEW: %s does not make a pgvault repository URL (%v): this local folder is a placeholder", what, err)
		s.b.set("repo", fileRepo(DefaultRepoRoot, s.name), "")
		return false
	}
	s.b.note("repo: "+newRepoNote, tool)
	s.b.set("repo", raw, "")
	return true
}

// placeholderRepo stands in for storage pgvault cannot use.
func placeholderRepo(s *siteOut, what string) {
	s.b.note("REVIEW: the backups went to %s, which pgvault cannot store to (it stores to file://, s3://, gs://, azure://, sftp:// and swift://): this local folder is a placeholder", what)
	s.b.set("repo", fileRepo(DefaultRepoRoot, s.name), "")
}

// Notes naming the environment the agent passes to the store SDKs: the
// source tools kept credentials in their configuration files, pgvault
// never writes them into its own.
const (
	gcsCredsNote   = "Google Cloud Storage credentials: Application Default Credentials: set GOOGLE_APPLICATION_CREDENTIALS=%s in the agent's environment (the key file stays where it is; its contents were not copied)"
	gcsADCNote     = "Google Cloud Storage credentials: Application Default Credentials (the instance's service account, gcloud's, or GOOGLE_APPLICATION_CREDENTIALS=/path/to/key.json in the agent's environment)"
	azureKeyNote   = "Azure credentials: set AZURE_STORAGE_KEY to the account key in the agent's environment (%s was not copied)"
	azureSASNote   = "Azure credentials: set AZURE_STORAGE_SAS_TOKEN to the shared access signature in the agent's environment (%s was not copied)"
	azureChainNote = "Azure credentials: AZURE_STORAGE_KEY, AZURE_STORAGE_SAS_TOKEN or AZURE_STORAGE_CONNECTION_STRING in the agent's environment, else the default Azure credential chain (managed identity, az login)"
)

// envVar is a setting the agent takes from its environment: name is the
// variable, value the source's (left out when secret), from the source's
// key.
type envVar struct {
	name, value, from string
	secret            bool
}

// envNote tells which variables to set in the agent's environment, with
// the values that are not secret; a secret is named, never copied.
func envNote(b *block, what string, vars []envVar) {
	var parts []string
	for _, v := range vars {
		switch {
		case v.secret:
			parts = append(parts, v.name+" (the "+v.from+", not copied)")
		case v.value != "":
			parts = append(parts, v.name+"="+v.value)
		}
	}
	if len(parts) > 0 {
		b.note("%s: set %s in the agent's environment", what, strings.Join(parts, ", "))
	}
}

// azureCloudSuffix maps the names the tools give Azure's national clouds
// to their storage DNS suffix; the public cloud needs no endpoint.
func azureCloudSuffix(cloud string) (suffix string, known bool) {
	switch strings.ToLower(strings.TrimSpace(cloud)) {
	case "", "public", "azurepubliccloud", "azurecloud":
		return "", true
	case "china", "azurechinacloud":
		return "core.chinacloudapi.cn", true
	case "germany", "azuregermancloud":
		return "core.cloudapi.de", true
	case "usgov", "usgovernment", "azureusgovernmentcloud", "azureusgovernment":
		return "core.usgovcloudapi.net", true
	}
	return "", false
}

// azureEndpoint is the blob service URL of account in a national cloud
// (suffix from azureCloudSuffix), or "" for the public cloud.
func azureEndpoint(account, suffix string) string {
	if suffix == "" || account == "" {
		return ""
	}
	return "https://" + account + ".blob." + suffix
}

// swiftAuthVersion reads "1", "2.0", "v3"... as 1, 2 or 3.
func swiftAuthVersion(v string) (string, bool) {
	v = strings.TrimPrefix(strings.ToLower(strings.TrimSpace(v)), "v")
	switch v {
	case "1", "1.0":
		return "1", true
	case "2", "2.0":
		return "2", true
	case "3", "3.0":
		return "3", true
	}
	return "", false
}

// logLevel maps Python's and pgBackRest's level names to pgvault's.
func logLevel(s string) (string, bool) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "debug", "trace", "detail":
		return "debug", true
	case "info":
		return "info", true
	case "warning", "warn":
		return "warn", true
	case "error", "critical", "fatal":
		return "error", true
	}
	return "", false
}

// scheduleNote is the comment for tools whose backups cron starts.
func scheduleNote(b *block, tool, cronCmd string) {
	b.note("%s has no schedule of its own: cron runs `%s`. The agent schedules backups itself:", tool, cronCmd)
	b.note("set interval_hours (and hour/minute, UTC) to your cron job's schedule, then remove the cron job")
}

// archiveNote says what becomes of the tool's archive_command.
func archiveNote(b *block, was string) {
	b.note("archive mode: PostgreSQL's archive_command (%s) must become 'pgvault wal push %%p' with this site's repo and password (docs/reference/cli.md, wal push)", was)
}

// readableQuery escapes a query value but keeps ':' and '/' readable
// (endpoint=https://host:9000), as the docs write URLs.
func readableQuery(v string) string {
	return strings.NewReplacer("%3A", ":", "%2F", "/").Replace(url.QueryEscape(v))
}
