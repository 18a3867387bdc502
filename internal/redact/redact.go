// Package redact hides secrets in what pgvault prints: PostgreSQL
// connection strings in both of libpq's spellings (keyword/value and
// postgres:// URLs), repository URLs, error messages that echo either,
// and the process's own argument list. It is the only place that knows
// where a secret sits in such a string; every log line, error message and
// status document goes through it.
//
// Positions come from a scanner that follows libpq's conninfo grammar
// (keyword, optional blanks, '=', optional blanks, then a value that is
// either single-quoted with backslash escapes or runs to the next blank,
// with backslash escapes). pgconn's own parser is the judge: Conninfo
// checks its result with pgconn.ParseConfig and hides the whole string
// rather than print one that still yields the password, and HasPassword
// asks pgconn whether the string sets one. The scanner errs towards
// hiding more than a secret (an unterminated quote hides the rest of the
// string), never less.
//
// The package imports nothing of pgvault's, so every layer may use it.
package redact

import (
	"net/url"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
)

// Mask replaces a secret.
const Mask = "xxxxx"

// Hidden is what Conninfo returns when it cannot be sure the password is
// gone any other way.
const Hidden = "(connection string hidden: it holds a password)"

// secretKeys are the libpq keywords whose values are secrets.
var secretKeys = []string{"password", "sslpassword"}

// secretQuery are URL query parameters whose values are secrets: libpq's,
// and the usual names of object-store credentials and signed-URL tokens.
var secretQuery = []string{"password", "sslpassword", "secret", "secret_key", "secret_access_key",
	"access_key", "token", "session_token", "sas", "sig", "signature", "key"}

// Spans returns the byte ranges [start, end) of every secret value in s,
// which may be a conninfo, a URL, a command-line argument that holds one,
// or free text such as an error message: every value of a password or
// sslpassword keyword, the password of every scheme://user:password@
// authority, and every secret URL query value. The ranges are sorted and
// do not overlap.
func Spans(s string) [][2]int {
	var spans [][2]int
	spans = append(spans, keywordSpans(s)...)
	spans = append(spans, userinfoSpans(s)...)
	return merge(spans)
}

// keywordSpans finds "password = value" (and sslpassword, and secret URL
// query parameters) anywhere in s.
func keywordSpans(s string) [][2]int {
	var spans [][2]int
	lower := asciiLower(s) // byte for byte: positions must match s
	for i := 0; i < len(s); {
		key, start, ok := nextKey(lower, i)
		if !ok {
			break
		}
		// What comes after the keyword: blanks, '=', blanks. In a URL query
		// (key after '?' or '&') there are no blanks and '&' ends the value.
		inQuery := start > 0 && (s[start-1] == '?' || s[start-1] == '&')
		j := start + len(key)
		if !inQuery {
			j = skipBlanks(s, j)
		}
		if j >= len(s) || s[j] != '=' {
			i = start + len(key)
			continue
		}
		j++
		if !inQuery {
			j = skipBlanks(s, j)
		}
		end := valueEnd(s, j, inQuery)
		if end > j {
			spans = append(spans, [2]int{j, end})
		}
		i = max(end, j)
	}
	return spans
}

// nextKey finds, from i on, the next secret keyword that starts a word
// (not "xpassword"); lower is s in lower case.
func nextKey(lower string, i int) (key string, start int, ok bool) {
	best, bestKey := -1, ""
	for _, k := range append(secretKeys, secretQuery...) {
		for from := i; from < len(lower); {
			at := strings.Index(lower[from:], k)
			if at < 0 {
				break
			}
			at += from
			if at > 0 && isKeyChar(lower[at-1]) || at+len(k) < len(lower) && isKeyChar(lower[at+len(k)]) {
				from = at + 1
				continue
			}
			// Only libpq's own keywords count outside a URL query: "key=" in a
			// conninfo (none exists) or in prose is not a secret.
			if !isSecretKey(k) && !(at > 0 && (lower[at-1] == '?' || lower[at-1] == '&')) {
				from = at + 1
				continue
			}
			if best < 0 || at < best || at == best && len(k) > len(bestKey) {
				best, bestKey = at, k
			}
			break
		}
	}
	return bestKey, best, best >= 0
}

func isSecretKey(k string) bool {
	for _, s := range secretKeys {
		if s == k {
			return true
		}
	}
	return false
}

// valueEnd returns where the value starting at j ends, following libpq: a
// quoted value runs to the closing quote (backslash escapes anything; an
// unterminated one runs to the end), an unquoted one to the next blank
// (again with backslash escapes). In a URL query it also ends at '&' or
// '#'.
func valueEnd(s string, j int, inQuery bool) int {
	if j < len(s) && s[j] == '\'' && !inQuery {
		k := j + 1
		for k < len(s) && s[k] != '\'' {
			if s[k] == '\\' {
				k++
			}
			k++
		}
		return min(k+1, len(s))
	}
	k := j
	for k < len(s) && !isBlank(s[k]) {
		if inQuery && (s[k] == '&' || s[k] == '#') {
			break
		}
		if s[k] == '\\' {
			k++
		}
		k++
	}
	return min(k, len(s))
}

// userinfoSpans finds the password of every scheme://user:password@host.
// The authority ends at the first '/', '?' or '#' (as in net/url), and
// its user information at the last '@' before that, so a password holding
// an unescaped '@' is hidden whole.
func userinfoSpans(s string) [][2]int {
	var spans [][2]int
	for from := 0; ; {
		i := strings.Index(s[from:], "://")
		if i < 0 {
			return spans
		}
		authStart := from + i + 3
		authEnd := len(s)
		if k := strings.IndexAny(s[authStart:], "/?# \t\n"); k >= 0 {
			authEnd = authStart + k
		}
		auth := s[authStart:authEnd]
		if at := strings.LastIndexByte(auth, '@'); at >= 0 {
			if colon := strings.IndexByte(auth[:at], ':'); colon >= 0 && colon+1 < at {
				spans = append(spans, [2]int{authStart + colon + 1, authStart + at})
			}
		}
		from = authStart
	}
}

// merge sorts spans and joins overlapping ones.
func merge(spans [][2]int) [][2]int {
	if len(spans) < 2 {
		return spans
	}
	for i := 1; i < len(spans); i++ { // insertion sort: a handful of spans
		for j := i; j > 0 && spans[j][0] < spans[j-1][0]; j-- {
			spans[j], spans[j-1] = spans[j-1], spans[j]
		}
	}
	out := spans[:1]
	for _, sp := range spans[1:] {
		last := &out[len(out)-1]
		if sp[0] <= last[1] {
			last[1] = max(last[1], sp[1])
			continue
		}
		out = append(out, sp)
	}
	return out
}

// Text returns s with every secret Spans finds replaced by Mask.
func Text(s string) string {
	spans := Spans(s)
	if len(spans) == 0 {
		return s
	}
	var b strings.Builder
	last := 0
	for _, sp := range spans {
		b.WriteString(s[last:sp[0]])
		b.WriteString(Mask)
		last = sp[1]
	}
	b.WriteString(s[last:])
	return b.String()
}

// Conninfo returns a libpq connection string (keyword/value or URL) fit
// to print: every password replaced by Mask. When pgconn still finds the
// password in the result, it returns Hidden instead.
func Conninfo(conninfo string) string {
	out := Text(conninfo)
	if pw := passwordIn(conninfo); pw != "" && (passwordIn(out) == pw || !strings.Contains(out, Mask)) {
		return Hidden
	}
	return out
}

// Message returns msg (an error message, a log line) with its secrets
// hidden: what Spans finds, and every literal occurrence of a password
// that one of the given connection strings sets (pgconn's errors quote
// the string they failed on in their own way).
func Message(msg string, conninfos ...string) string {
	out := Text(msg)
	for _, c := range conninfos {
		for _, secret := range secretsOf(c) {
			out = strings.ReplaceAll(out, secret, Mask)
		}
	}
	return out
}

// secretsOf lists the secrets of a connection string as they may appear
// in a message: the raw text of each span (quotes and escapes included)
// and the value pgconn parses.
func secretsOf(conninfo string) []string {
	var out []string
	for _, sp := range Spans(conninfo) {
		raw := conninfo[sp[0]:sp[1]]
		out = append(out, raw)
		if unq := strings.Trim(raw, "'"); unq != raw && unq != "" {
			out = append(out, unq)
		}
	}
	if pw := passwordIn(conninfo); pw != "" {
		out = append(out, pw)
	}
	return out
}

// sentinel is a password no connection string sets; see passwordIn.
const sentinel = "\x01pgvault-redact-sentinel\x01"

// passwordIn returns the password a connection string itself sets, as
// pgconn parses it ("" when none, or when pgconn cannot parse it). A
// password from PGPASSWORD or ~/.pgpass does not count: for the
// keyword/value form the sentinel goes first, so it stands unless the
// string sets its own (later keywords win), and pgconn consults the
// password file only when no password is set.
func passwordIn(conninfo string) string {
	if isURL(conninfo) {
		u, err := url.Parse(conninfo)
		if err != nil {
			return ""
		}
		if pw, ok := u.User.Password(); ok && pw != "" {
			return pw
		}
		return u.Query().Get("password")
	}
	cfg, err := pgconn.ParseConfig("password='" + sentinel + "' " + conninfo)
	if err != nil || cfg.Password == sentinel {
		return ""
	}
	return cfg.Password
}

// HasPassword reports whether a connection string itself holds a
// password, in any spelling libpq accepts (not counting PGPASSWORD or
// ~/.pgpass). When pgconn cannot parse it, any password keyword counts.
func HasPassword(conninfo string) bool {
	if passwordIn(conninfo) != "" {
		return true
	}
	for _, sp := range Spans(conninfo) {
		if v := strings.Trim(conninfo[sp[0]:sp[1]], "'"); v != "" {
			return true
		}
	}
	return false
}

// URL returns a repository or connection URL fit to print: the userinfo
// password and secret query values replaced by Mask. Text that does not
// parse as a URL is scanned like any text.
func URL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme == "" {
		return Text(raw)
	}
	if _, ok := u.User.Password(); ok {
		u.User = url.UserPassword(u.User.Username(), Mask)
	}
	if u.RawQuery != "" {
		q := u.Query()
		changed := false
		for k := range q {
			for _, s := range secretQuery {
				if strings.EqualFold(k, s) {
					q.Set(k, Mask)
					changed = true
				}
			}
		}
		if changed {
			u.RawQuery = q.Encode()
		}
	}
	return u.String()
}

func isURL(s string) bool {
	return strings.HasPrefix(s, "postgres://") || strings.HasPrefix(s, "postgresql://")
}

// asciiLower lowers ASCII letters only, so that every byte keeps its
// position (strings.ToLower rewrites invalid UTF-8 to longer runes).
func asciiLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'A' && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

func isKeyChar(c byte) bool {
	return c == '_' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9'
}

func isBlank(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'
}

func skipBlanks(s string, i int) int {
	for i < len(s) && isBlank(s[i]) {
		i++
	}
	return i
}
