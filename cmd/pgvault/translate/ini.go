package translate

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// ErrSyntax is matched by every error about the form of the source file
// (its tool could not have read it either).
var ErrSyntax = errors.New("syntax error")

// SyntaxError names the file and line of a mistake in the source file.
type SyntaxError struct {
	File string
	Line int
	Msg  string
}

func (e *SyntaxError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
	}
	return e.File + ": " + e.Msg
}

// Is makes every SyntaxError match ErrSyntax.
func (e *SyntaxError) Is(target error) bool { return target == ErrSyntax }

// iniDialect says how a tool's INI files are written: pgBackRest takes
// key=value only and repeats list options; Barman (Python's ConfigParser)
// also takes "key: value", continues a value on indented lines, and
// ignores the case of keys.
type iniDialect struct {
	delims       string
	continuation bool
	lowerKeys    bool
	repeatable   func(key string) bool // may a key appear more than once in a section
}

// iniSection is one [section] with its options in file order.
type iniSection struct {
	name    string
	file    string
	line    int
	options []iniOption
}

type iniOption struct {
	key, value string
	line       int
}

// get returns the last value of key and whether it is set.
func (s *iniSection) get(key string) (string, bool) {
	for i := len(s.options) - 1; i >= 0; i-- {
		if s.options[i].key == key {
			return s.options[i].value, true
		}
	}
	return "", false
}

// parseINI reads an INI file strictly: every line is blank, a comment
// (# or ;), a [section] header, an option inside a section, or (with
// continuation) the indented continuation of the option above it.
// Repeated sections and repeated non-list options are errors.
func parseINI(file string, data []byte, d iniDialect) ([]*iniSection, error) {
	errAt := func(line int, format string, args ...any) error {
		return &SyntaxError{File: file, Line: line, Msg: fmt.Sprintf(format, args...)}
	}
	if !utf8.Valid(data) {
		return nil, errAt(0, "not UTF-8 text")
	}
	data = bytes.TrimPrefix(data, []byte("\ufeff"))
	var sections []*iniSection
	seen := map[string]int{}
	var cur *iniSection
	var last *iniOption // the option a continuation line extends
	for n, raw := range strings.Split(string(data), "\n") {
		lineNo := n + 1
		raw = strings.TrimSuffix(raw, "\r")
		line := strings.TrimSpace(raw)
		if d.continuation && last != nil && line != "" && (raw[0] == ' ' || raw[0] == '\t') &&
			!strings.HasPrefix(line, "#") && !strings.HasPrefix(line, ";") {
			last.value = strings.TrimSpace(last.value + "\n" + line)
			continue
		}
		if line == "" {
			last = nil
			continue
		}
		if line[0] == '#' || line[0] == ';' {
			continue
		}
		last = nil
		if line[0] == '[' {
			if !strings.HasSuffix(line, "]") {
				return nil, errAt(lineNo, "section header %q does not end with ]", line)
			}
			name := strings.TrimSpace(line[1 : len(line)-1])
			if name == "" || strings.ContainsAny(name, "[]") {
				return nil, errAt(lineNo, "bad section name %q", line)
			}
			if first, dup := seen[name]; dup {
				return nil, errAt(lineNo, "section [%s] repeated (first at line %d)", name, first)
			}
			seen[name] = lineNo
			cur = &iniSection{name: name, file: file, line: lineNo}
			sections = append(sections, cur)
			continue
		}
		i := strings.IndexAny(line, d.delims)
		if i < 0 {
			return nil, errAt(lineNo, "%q is neither an option (key%svalue) nor a [section]", line, d.delims[:1])
		}
		key := strings.TrimSpace(line[:i])
		value := strings.TrimSpace(line[i+1:])
		if key == "" {
			return nil, errAt(lineNo, "option with no name")
		}
		if d.lowerKeys {
			key = strings.ToLower(key)
		}
		if cur == nil {
			return nil, errAt(lineNo, "option %q before any [section]", key)
		}
		if d.repeatable == nil || !d.repeatable(key) {
			for _, o := range cur.options {
				if o.key == key {
					return nil, errAt(lineNo, "option %q repeated in [%s] (first at line %d)", key, cur.name, o.line)
				}
			}
		}
		cur.options = append(cur.options, iniOption{key: key, value: value, line: lineNo})
		last = &cur.options[len(cur.options)-1]
	}
	return sections, nil
}
