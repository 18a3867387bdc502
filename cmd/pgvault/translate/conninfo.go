package translate

import (
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
)

// ErrConninfo is matched by a connection string that cannot be read.
var ErrConninfo = errors.New("bad connection string")

// param is one keyword=value of a libpq connection string.
type param struct{ key, value string }

// parseConninfo splits a libpq keyword/value connection string, with
// libpq's quoting: a value is single-quoted (\' and \\ escaped) or runs
// to the next blank (backslash escapes the next character).
func parseConninfo(s string) ([]param, error) {
	var out []param
	i := 0
	for {
		for i < len(s) && isBlank(s[i]) {
			i++
		}
		if i == len(s) {
			return out, nil
		}
		start := i
		for i < len(s) && s[i] != '=' && !isBlank(s[i]) {
			i++
		}
		key := s[start:i]
		for i < len(s) && isBlank(s[i]) {
			i++
		}
		if key == "" || i == len(s) || s[i] != '=' {
			return nil, fmt.Errorf("%w: %q has no \"=value\"", ErrConninfo, key)
		}
		i++
		for i < len(s) && isBlank(s[i]) {
			i++
		}
		var v strings.Builder
		if i < len(s) && s[i] == '\'' {
			i++
			closed := false
			for i < len(s) {
				c := s[i]
				if c == '\\' && i+1 < len(s) {
					v.WriteByte(s[i+1])
					i += 2
					continue
				}
				i++
				if c == '\'' {
					closed = true
					break
				}
				v.WriteByte(c)
			}
			if !closed {
				return nil, fmt.Errorf("%w: unterminated quoted value of %q", ErrConninfo, key)
			}
		} else {
			for i < len(s) && !isBlank(s[i]) {
				if s[i] == '\\' && i+1 < len(s) {
					i++
				}
				v.WriteByte(s[i])
				i++
			}
		}
		out = append(out, param{key, v.String()})
	}
}

func isBlank(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'
}

// conninfoOrder puts the usual keywords first; the rest follow in name
// order, so that the output does not depend on a map's order.
var conninfoOrder = []string{"host", "hostaddr", "port", "user", "dbname"}

// buildConninfo writes params as a connection string, quoting values
// that need it.
func buildConninfo(params []param) string {
	ps := slices.Clone(params)
	rank := func(k string) int {
		if i := slices.Index(conninfoOrder, k); i >= 0 {
			return i
		}
		return len(conninfoOrder)
	}
	slices.SortStableFunc(ps, func(a, b param) int {
		if ra, rb := rank(a.key), rank(b.key); ra != rb {
			return ra - rb
		}
		return strings.Compare(a.key, b.key)
	})
	var parts []string
	for _, p := range ps {
		parts = append(parts, p.key+"="+quoteConninfoValue(p.value))
	}
	return strings.Join(parts, " ")
}

func quoteConninfoValue(v string) string {
	if v != "" && !strings.ContainsAny(v, " \t\n\r\f\v'\\") {
		return v
	}
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(v) + "'"
}

// withoutPassword returns the connection string (keyword/value or
// postgres:// URL) with any password removed, and whether it held one.
func withoutPassword(conninfo string) (string, bool, error) {
	if strings.HasPrefix(conninfo, "postgres://") || strings.HasPrefix(conninfo, "postgresql://") {
		u, err := url.Parse(conninfo)
		if err != nil {
			return "", false, fmt.Errorf("%w: not a postgres:// URL", ErrConninfo)
		}
		had := false
		if u.User != nil {
			if _, ok := u.User.Password(); ok {
				had = true
				u.User = url.User(u.User.Username())
			}
		}
		q := u.Query()
		if q.Has("password") {
			had = true
			q.Del("password")
			u.RawQuery = q.Encode()
		}
		if !had {
			return conninfo, false, nil
		}
		return u.String(), true, nil
	}
	params, err := parseConninfo(conninfo)
	if err != nil {
		return "", false, err
	}
	had := false
	params = slices.DeleteFunc(params, func(p param) bool {
		if p.key == "password" {
			had = true
			return true
		}
		return false
	})
	if !had {
		return conninfo, false, nil
	}
	return buildConninfo(params), true, nil
}
