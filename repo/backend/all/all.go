package all

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/pgvault/pgvault/internal/redact"
	"github.com/pgvault/pgvault/repo/backend"
	"github.com/pgvault/pgvault/repo/backend/azure"
	"github.com/pgvault/pgvault/repo/backend/file"
	"github.com/pgvault/pgvault/repo/backend/gcs"
	"github.com/pgvault/pgvault/repo/backend/retry"
	"github.com/pgvault/pgvault/repo/backend/s3"
	"github.com/pgvault/pgvault/repo/backend/sftp"
	"github.com/pgvault/pgvault/repo/backend/swift"
)

// Schemes of repository URLs.
const (
	SchemeFile  = "file"
	SchemeS3    = "s3"
	SchemeSFTP  = "sftp"
	SchemeSwift = "swift"
	SchemeGCS   = "gs"
	SchemeAzure = "azure"
)

// Location is a parsed repository URL: Scheme says which of the other
// fields applies.
type Location struct {
	Scheme string
	Path   string // file: the folder
	S3     s3.Options
	SFTP   sftp.Options
	Swift  swift.Options
	GCS    gcs.Options
	Azure  azure.Options // account and endpoint from the URL; credentials come from the environment at Open
}

// Options tune Open.
type Options struct {
	// Retry configures the retry wrapper around the backend, including the
	// OnRetry and OnGiveUp callbacks; zero fields take retry's defaults.
	Retry retry.Options
	// Create prepares the storage for a new repository (repo init): it
	// creates the S3 or GCS bucket or the Swift or Azure container if it does not exist. File and SFTP folders are
	// created by the first save anyway.
	Create bool
	// Wrap, when set, wraps the backend under the retry wrapper, so that
	// what it adds (an upload observer, the test build's fault injection)
	// is retried like the storage's own failures.
	Wrap func(backend.Backend) backend.Backend
}

// Open parses rawURL and returns its backend wrapped in retry.New. It does
// no I/O, except that Create may create an S3 bucket or a Swift container.
func Open(ctx context.Context, rawURL string, opts Options) (backend.Backend, error) {
	loc, err := ParseURL(rawURL)
	if err != nil {
		return nil, err
	}
	var b backend.Backend
	switch loc.Scheme {
	case SchemeFile:
		b, err = file.New(loc.Path)
	case SchemeS3:
		var sb *s3.Backend
		sb, err = s3.New(ctx, loc.S3)
		if err == nil && opts.Create {
			err = sb.EnsureBucket(ctx)
		}
		b = sb
	case SchemeSFTP:
		b, err = sftp.New(loc.SFTP)
	case SchemeSwift:
		var sb *swift.Backend
		sb, err = swift.New(loc.Swift)
		if err == nil && opts.Create {
			err = sb.EnsureContainer(ctx)
		}
		b = sb
	case SchemeGCS:
		var gb *gcs.Backend
		gb, err = gcs.New(ctx, loc.GCS)
		if err == nil && opts.Create {
			err = gb.EnsureBucket(ctx)
		}
		b = gb
	case SchemeAzure:
		var ab *azure.Backend
		ab, err = azure.New(ctx, loc.Azure.OptionsFromEnv(os.Getenv))
		if err == nil && opts.Create {
			err = ab.EnsureContainer(ctx)
		}
		b = ab
	default:
		err = fmt.Errorf("no backend for scheme %q", loc.Scheme)
	}
	if err != nil {
		return nil, fmt.Errorf("open repository %s: %w", redact.URL(rawURL), err)
	}
	if opts.Wrap != nil {
		b = opts.Wrap(b)
	}
	return retry.New(b, opts.Retry), nil
}

func schemeList() string { return "file://, s3://, gs://, azure://, sftp:// or swift://" }

// ParseURL parses a repository URL or a bare path (see the package doc).
func ParseURL(raw string) (Location, error) {
	loc, err := parseURL(raw)
	if err != nil {
		return loc, badURLError{err}
	}
	return loc, nil
}

// ErrBadURL is matched by every error about the form of a repository URL
// (unknown scheme, missing parts, bad parameters): a usage mistake rather
// than a storage failure.
var ErrBadURL = errors.New("bad repository URL")

type badURLError struct{ err error }

func (e badURLError) Error() string        { return e.err.Error() }
func (e badURLError) Unwrap() error        { return e.err }
func (e badURLError) Is(target error) bool { return target == ErrBadURL }

func parseURL(raw string) (Location, error) {
	if strings.TrimSpace(raw) == "" {
		return Location{}, errors.New("no repository given: set --repo or PGVAULT_REPO (a path, file://, s3://, gs://, azure://, sftp:// or swift:// URL)")
	}
	scheme, rest, hasScheme := strings.Cut(raw, ":")
	if !hasScheme || !isScheme(scheme) {
		return fileLocation(raw)
	}
	scheme = strings.ToLower(scheme)
	if !strings.HasPrefix(rest, "//") {
		switch scheme {
		case SchemeFile, SchemeS3, SchemeSFTP, SchemeSwift, SchemeGCS, SchemeAzure:
			return Location{}, fmt.Errorf("repository URL %q: write %s://...", redact.URL(raw), scheme)
		}
		// "name:with:colons" is a relative path.
		return fileLocation(raw)
	}
	u, err := url.Parse(raw)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // url.Error repeats the whole URL, password included
		}
		return Location{}, fmt.Errorf("repository URL %q: %w", redact.URL(raw), err)
	}
	switch scheme {
	case SchemeFile:
		return parseFile(raw, u)
	case SchemeS3:
		return parseS3(raw, u)
	case SchemeSFTP:
		return parseSFTP(raw, u)
	case SchemeSwift:
		return parseSwift(raw, u)
	case SchemeGCS:
		return parseGCS(raw, u)
	case SchemeAzure:
		return parseAzure(raw, u)
	}
	return Location{}, fmt.Errorf("unknown repository URL scheme %q: use %s", scheme, schemeList())
}

func isScheme(s string) bool {
	if s == "" || len(s) == 1 { // "c:..." is no scheme worth guessing
		return false
	}
	for i, c := range s {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z':
		case i > 0 && (c >= '0' && c <= '9' || c == '+' || c == '-' || c == '.'):
		default:
			return false
		}
	}
	return true
}

func fileLocation(p string) (Location, error) {
	abs, err := filepath.Abs(p)
	if err != nil {
		return Location{}, fmt.Errorf("repository path %q: %w", p, err)
	}
	return Location{Scheme: SchemeFile, Path: abs}, nil
}

func parseFile(raw string, u *url.URL) (Location, error) {
	if u.Host != "" && u.Host != "localhost" {
		return Location{}, fmt.Errorf("repository URL %q: a file URL has three slashes and an absolute path (file:///path/to/repo), or give a plain path", raw)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return Location{}, fmt.Errorf("repository URL %q: a file URL takes no query or fragment", raw)
	}
	if u.Path == "" || !strings.HasPrefix(u.Path, "/") {
		return Location{}, fmt.Errorf("repository URL %q: no path (want file:///path/to/repo)", raw)
	}
	return Location{Scheme: SchemeFile, Path: filepath.Clean(u.Path)}, nil
}

// query checks q against the allowed keys and returns single values.
func query(raw string, q url.Values, allowed ...string) (map[string]string, error) {
	out := map[string]string{}
	for k, vs := range q {
		ok := false
		for _, a := range allowed {
			ok = ok || k == a
		}
		if !ok {
			sort.Strings(allowed)
			return nil, fmt.Errorf("repository URL %q: unknown parameter %q (known: %s)", redact.URL(raw), k, strings.Join(allowed, ", "))
		}
		if len(vs) != 1 {
			return nil, fmt.Errorf("repository URL %q: parameter %q given %d times", redact.URL(raw), k, len(vs))
		}
		out[k] = vs[0]
	}
	return out, nil
}

func parseBool(raw, key, v string) (bool, error) {
	if v == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, fmt.Errorf("repository URL %q: %s=%q: want true or false", redact.URL(raw), key, v)
	}
	return b, nil
}

func parseS3(raw string, u *url.URL) (Location, error) {
	if u.User != nil {
		return Location{}, fmt.Errorf("repository URL %q: credentials do not belong in the URL: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY", redact.URL(raw))
	}
	if u.Host == "" {
		return Location{}, fmt.Errorf("repository URL %q: no bucket (want s3://bucket/prefix)", raw)
	}
	if u.Port() != "" {
		return Location{}, fmt.Errorf("repository URL %q: the host part is the bucket; give the server as ?endpoint=http://host:port", raw)
	}
	q, err := query(raw, u.Query(), "endpoint", "region", "path_style", "insecure")
	if err != nil {
		return Location{}, err
	}
	o := s3.Options{
		Bucket:   u.Host,
		Prefix:   strings.Trim(u.Path, "/"),
		Endpoint: q["endpoint"],
		Region:   q["region"],
	}
	if o.PathStyle, err = parseBool(raw, "path_style", q["path_style"]); err != nil {
		return Location{}, err
	}
	if o.Insecure, err = parseBool(raw, "insecure", q["insecure"]); err != nil {
		return Location{}, err
	}
	if o.Endpoint != "" {
		e := o.Endpoint
		if !strings.Contains(e, "://") {
			e = "https://" + e
		}
		eu, err := url.Parse(e)
		if err != nil || eu.Host == "" || (eu.Scheme != "http" && eu.Scheme != "https") {
			return Location{}, fmt.Errorf("repository URL %q: endpoint %q: want http://host:port or https://host", raw, o.Endpoint)
		}
	}
	return Location{Scheme: SchemeS3, S3: o}, nil
}

func parseSFTP(raw string, u *url.URL) (Location, error) {
	o := sftp.Options{Host: u.Hostname()}
	if u.User != nil {
		if _, ok := u.User.Password(); ok {
			return Location{}, fmt.Errorf("repository URL %q: passwords are not supported: log in with a key (?identity=/path/to/key or ssh-agent)", redact.URL(raw))
		}
		o.User = u.User.Username()
	}
	if o.Host == "" {
		return Location{}, fmt.Errorf("repository URL %q: no host (want sftp://user@host:port/path)", raw)
	}
	if p := u.Port(); p != "" {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 {
			return Location{}, fmt.Errorf("repository URL %q: bad port %q", raw, p)
		}
		o.Port = n
	}
	if u.Path == "" || u.Path == "/" {
		return Location{}, fmt.Errorf("repository URL %q: no repository folder (want sftp://user@host:port/path, or /~/path for one in the login folder)", raw)
	}
	o.Path = u.Path
	q, err := query(raw, u.Query(), "identity", "known_hosts", "connections")
	if err != nil {
		return Location{}, err
	}
	o.IdentityFile = q["identity"]
	o.KnownHostsFile = q["known_hosts"]
	if c := q["connections"]; c != "" {
		n, err := strconv.Atoi(c)
		if err != nil || n < 1 || n > 64 {
			return Location{}, fmt.Errorf("repository URL %q: connections=%q: want a number from 1 to 64", raw, c)
		}
		o.Connections = n
	}
	return Location{Scheme: SchemeSFTP, SFTP: o}, nil
}

// parseSwift reads swift://container/prefix?auth_url=...&region=...;
// credentials come from the OS_* or ST_* variables, never the URL.
func parseSwift(raw string, u *url.URL) (Location, error) {
	// A password inside auth_url would show in every message that quotes
	// the URL (redact.URL masks the URL's own userinfo only): refuse it
	// first, quoting nothing.
	for _, a := range u.Query()["auth_url"] {
		if au, err := url.Parse(a); err != nil || au.User != nil {
			return Location{}, errors.New("repository URL: auth_url: want http://host:port/path or https://host/path without credentials: set OS_USERNAME and OS_PASSWORD (or ST_USER and ST_KEY)")
		}
	}
	if u.User != nil {
		return Location{}, fmt.Errorf("repository URL %q: credentials do not belong in the URL: set OS_USERNAME and OS_PASSWORD (or ST_USER and ST_KEY)", redact.URL(raw))
	}
	if u.Host == "" {
		return Location{}, fmt.Errorf("repository URL %q: no container (want swift://container/prefix)", redact.URL(raw))
	}
	if u.Port() != "" || strings.Contains(u.Host, ":") {
		return Location{}, fmt.Errorf("repository URL %q: the host part is the container; give the auth server as ?auth_url=https://host:5000/v3 or OS_AUTH_URL", redact.URL(raw))
	}
	q, err := query(raw, u.Query(), "auth_url", "region", "auth_version")
	if err != nil {
		return Location{}, err
	}
	o := swift.Options{
		Container: u.Host,
		Prefix:    strings.Trim(u.Path, "/"),
		AuthURL:   q["auth_url"],
		Region:    q["region"],
	}
	if o.AuthURL != "" {
		au, err := url.Parse(o.AuthURL)
		if err != nil || au.Host == "" || (au.Scheme != "http" && au.Scheme != "https") {
			return Location{}, fmt.Errorf("repository URL %q: auth_url: want http://host:port/path or https://host/path without credentials", redact.URL(raw))
		}
	}
	if v := q["auth_version"]; v != "" {
		switch v {
		case "1", "2", "3":
			o.AuthVersion = int(v[0] - '0')
		default:
			return Location{}, fmt.Errorf("repository URL %q: auth_version=%q: want 1, 2 or 3", redact.URL(raw), v)
		}
	}
	return Location{Scheme: SchemeSwift, Swift: o}, nil
}

// parseGCS reads gs://bucket/prefix?endpoint=...&project=...; credentials
// come from Application Default Credentials, never the URL.
func parseGCS(raw string, u *url.URL) (Location, error) {
	if u.User != nil {
		return Location{}, fmt.Errorf("repository URL %q: credentials do not belong in the URL: set GOOGLE_APPLICATION_CREDENTIALS to a key file, or use gcloud's application default credentials", redact.URL(raw))
	}
	if u.Host == "" {
		return Location{}, fmt.Errorf("repository URL %q: no bucket (want gs://bucket/prefix)", raw)
	}
	if u.Port() != "" {
		return Location{}, fmt.Errorf("repository URL %q: the host part is the bucket; give an emulator as ?endpoint=http://host:port", raw)
	}
	q, err := query(raw, u.Query(), "endpoint", "project")
	if err != nil {
		return Location{}, err
	}
	o := gcs.Options{
		Bucket:   u.Host,
		Prefix:   strings.Trim(u.Path, "/"),
		Endpoint: q["endpoint"],
		Project:  q["project"],
	}
	if o.Endpoint != "" {
		e := o.Endpoint
		if !strings.Contains(e, "://") {
			e = "http://" + e
		}
		eu, err := url.Parse(e)
		if err != nil || eu.Host == "" || eu.User != nil || (eu.Scheme != "http" && eu.Scheme != "https") {
			// Name the URL without its query: redact.URL does not see a
			// password inside a parameter's value.
			return Location{}, fmt.Errorf("repository URL %q: endpoint %q: want http://host:port or https://host", "gs://"+u.Host+u.EscapedPath(), redact.URL(o.Endpoint))
		}
	}
	return Location{Scheme: SchemeGCS, GCS: o}, nil
}

// parseAzure reads azure://container/prefix?account=...&endpoint=...;
// credentials come from the AZURE_STORAGE_* variables, never the URL.
func parseAzure(raw string, u *url.URL) (Location, error) {
	shown := azureShown(raw, u)
	if u.User != nil {
		return Location{}, fmt.Errorf("repository URL %q: credentials do not belong in the URL: set AZURE_STORAGE_KEY, AZURE_STORAGE_SAS_TOKEN or AZURE_STORAGE_CONNECTION_STRING", shown)
	}
	if u.Host == "" {
		return Location{}, fmt.Errorf("repository URL %q: no container (want azure://container/prefix)", shown)
	}
	if u.Port() != "" {
		return Location{}, fmt.Errorf("repository URL %q: the host part is the container; give the server as ?endpoint=http://host:port/account", shown)
	}
	if !validContainer(u.Host) {
		return Location{}, fmt.Errorf("repository URL %q: container %q: Azure wants 3-63 lower-case letters, digits and single hyphens, starting with a letter or digit", shown, u.Host)
	}
	q, err := query(shown, u.Query(), "account", "endpoint")
	if err != nil {
		return Location{}, err
	}
	o := azure.Options{
		Container: u.Host,
		Prefix:    strings.Trim(u.Path, "/"),
		Account:   q["account"],
		Endpoint:  q["endpoint"],
	}
	if o.Endpoint != "" {
		eu, err := url.Parse(o.Endpoint)
		if err != nil || eu.Host == "" || (eu.Scheme != "http" && eu.Scheme != "https") || eu.RawQuery != "" || eu.User != nil {
			return Location{}, fmt.Errorf("repository URL %q: endpoint %q: want http://host:port/account or https://host (a SAS goes in AZURE_STORAGE_SAS_TOKEN)", shown, hideQuery(o.Endpoint))
		}
	}
	return Location{Scheme: SchemeAzure, Azure: o}, nil
}

// validContainer follows Azure's container naming rules, so that a typo
// is a usage error here rather than an HTTP 400 later.
func validContainer(s string) bool {
	if len(s) < 3 || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' || strings.Contains(s, "--") {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// azureShown is raw fit for a message: redact.URL, and an endpoint's own
// query (a SAS pasted there) hidden too, which redact.URL sees as part of
// the endpoint value.
func azureShown(raw string, u *url.URL) string {
	q := u.Query()
	changed := false
	for k, vs := range q {
		for i, v := range vs {
			if h := hideQuery(v); h != v {
				vs[i], changed = h, true
			}
		}
		q[k] = vs
	}
	if !changed {
		return redact.URL(raw)
	}
	c := *u
	c.RawQuery = q.Encode()
	return redact.URL(c.String())
}

func hideQuery(s string) string {
	if i := strings.IndexByte(s, '?'); i >= 0 {
		return s[:i+1] + redact.Mask
	}
	return s
}
