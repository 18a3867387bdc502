package translate

import (
	"fmt"
	"strconv"
	"strings"
	"unicode"

	"go.yaml.in/yaml/v3"
)

// block is a YAML mapping under construction: fields in the order they
// are added, with comment lines between them.
type block struct {
	items []item
}

// item is one line of a block: a comment (key == "") or a field whose
// value is a scalar, a list of scalars or a nested block.
type item struct {
	key      string
	comment  string
	scalar   string // rendered YAML scalar
	list     []string
	sub      *block
	trailing string
}

// note adds a comment line.
func (b *block) note(format string, args ...any) {
	b.items = append(b.items, item{comment: cleanComment(fmt.Sprintf(format, args...))})
}

// notCarried adds the standard comment for a setting pgvault does not take.
func (b *block) notCarried(key, value, reason string) {
	b.note("not carried over: %s = %s — %s", key, value, reason)
}

// set adds a scalar field; v is a string, int or bool.
func (b *block) set(key string, v any, trailing string) {
	b.items = append(b.items, item{key: key, scalar: scalar(v), trailing: cleanComment(trailing)})
}

// setList adds a list of strings, written as a scalar when it has one.
func (b *block) setList(key string, vs []string, trailing string) {
	if len(vs) == 1 {
		b.set(key, vs[0], trailing)
		return
	}
	it := item{key: key, trailing: cleanComment(trailing)}
	for _, v := range vs {
		it.list = append(it.list, quote(v))
	}
	b.items = append(b.items, it)
}

// child returns the nested block under key, adding it on first use.
func (b *block) child(key string) *block {
	for _, it := range b.items {
		if it.key == key && it.sub != nil {
			return it.sub
		}
	}
	sub := &block{}
	b.items = append(b.items, item{key: key, sub: sub})
	return sub
}

// hasFields reports whether the block holds any field (not only comments).
func (b *block) hasFields() bool {
	for _, it := range b.items {
		if it.key != "" {
			return true
		}
	}
	return false
}

// write renders the block at the given indentation. A nested block with
// no fields writes only its comments (a bare "key:" would be null).
func (b *block) write(sb *strings.Builder, indent int) {
	pad := strings.Repeat(" ", indent)
	for _, it := range b.items {
		switch {
		case it.key == "":
			sb.WriteString(pad + "# " + it.comment + "\n")
		case it.sub != nil:
			if !it.sub.hasFields() {
				it.sub.write(sb, indent)
				continue
			}
			sb.WriteString(pad + quoteKey(it.key) + ":" + trailing(it.trailing) + "\n")
			it.sub.write(sb, indent+2)
		case it.list != nil:
			sb.WriteString(pad + quoteKey(it.key) + ":" + trailing(it.trailing) + "\n")
			for _, v := range it.list {
				sb.WriteString(pad + "  - " + v + "\n")
			}
		default:
			sb.WriteString(pad + quoteKey(it.key) + ": " + it.scalar + trailing(it.trailing) + "\n")
		}
	}
}

func trailing(c string) string {
	if c == "" {
		return ""
	}
	return "   # " + c
}

// cleanComment keeps a comment on one line: control characters (a
// newline in a value from the source file) become spaces.
func cleanComment(s string) string {
	return strings.TrimSpace(strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || r == '\u2028' || r == '\u2029' || r == '\ufeff' {
			return ' '
		}
		return r
	}, strings.ToValidUTF8(s, "?")))
}

func scalar(v any) string {
	switch v := v.(type) {
	case int:
		return strconv.Itoa(v)
	case bool:
		return strconv.FormatBool(v)
	case string:
		return quote(v)
	}
	return quote(fmt.Sprint(v))
}

// quoteKey writes a mapping key: site names come from the source file.
func quoteKey(k string) string { return quote(k) }

// quote writes s as a YAML scalar: plain when that reads back as the same
// string, else double-quoted. Go's quoting escapes (\n, \t, \xNN, \uNNNN,
// \\, \") are all valid YAML double-quoted escapes.
func quote(s string) string {
	if plainSafe(s) {
		return s
	}
	return strconv.Quote(strings.ToValidUTF8(s, "\uFFFD"))
}

func plainSafe(s string) bool {
	if s == "" || len(s) > 200 {
		return false
	}
	for i, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
		case strings.ContainsRune("/_.@-", r):
		case i > 0 && strings.ContainsRune(":=?&%+~", r):
		default:
			return false
		}
	}
	if strings.Contains(s, ": ") || strings.HasSuffix(s, ":") {
		return false
	}
	// "true", "1", "null", "0x1f", "1e3" ... would not read back as strings.
	var back any
	if err := yaml.Unmarshal([]byte(s), &back); err != nil {
		return false
	}
	str, ok := back.(string)
	return ok && str == s
}
