package agent

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Parse decodes and validates a configuration document and fills in the
// defaults. Unknown fields, wrong types and bad values are ConfigErrors
// naming the field. It reads no other file (Load resolves secrets);
// relative paths are taken relative to the folder of file.
func Parse(data []byte, file string) (*Config, error) {
	return parse(data, file, "")
}

// parse is Parse with the folder the default state_file, alert_dir and
// maintenance_mode_file go in ("" for /var/lib/pgvault).
func parse(data []byte, file, stateDir string) (*Config, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, yamlError(file, err, nil)
	}
	if doc.Kind == 0 || len(doc.Content) == 0 {
		return nil, &ConfigError{File: file, Field: "sites", Msg: "the file is empty: configure at least one site (see docs/reference/config.md)"}
	}
	w := &walker{lines: map[int]string{}, nulls: map[string]bool{}}
	w.walk(doc.Content[0], reflect.TypeOf(Config{}), "")
	if w.err != nil {
		w.err.File = file
		return nil, w.err
	}
	var cfg Config
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil {
		return nil, yamlError(file, err, w.lines)
	}
	cfg.File = file
	for name, site := range cfg.Sites {
		// pghoard: a null basebackup_interval_hours takes no backups at all
		// (yaml.v3 cannot tell null from absent; the node tree can).
		if site != nil && w.nulls["sites."+name+".basebackup.interval_hours"] {
			zero := 0
			site.Basebackup.IntervalHours = &zero
		}
	}
	if err := cfg.fill(stateDir); err != nil {
		var ce *ConfigError
		if errors.As(err, &ce) {
			ce.File = file
			ce.Line = w.lineOf(ce.Field)
		}
		return nil, err
	}
	return &cfg, nil
}

// lineRe finds "line N: " in yaml.v3's messages.
var lineRe = regexp.MustCompile(`line (\d+): `)

// yamlError turns a yaml.v3 error into one ConfigError line, naming the
// field its line belongs to when known.
func yamlError(file string, err error, lines map[int]string) error {
	msg := err.Error()
	var te *yaml.TypeError
	if errors.As(err, &te) && len(te.Errors) > 0 {
		msg = te.Errors[0]
		if n := len(te.Errors) - 1; n > 0 {
			msg += fmt.Sprintf(" (and %d more)", n)
		}
	}
	msg = strings.TrimPrefix(msg, "yaml: ")
	msg = strings.TrimPrefix(msg, "unmarshal errors:\n  ")
	ce := &ConfigError{File: file}
	if m := lineRe.FindStringSubmatchIndex(msg); m != nil {
		ce.Line, _ = strconv.Atoi(msg[m[2]:m[3]])
		msg = msg[:m[0]] + msg[m[1]:]
		ce.Field = lines[ce.Line]
	}
	// yaml.v3 names Go types ("into int"); say what YAML wants instead.
	msg = strings.NewReplacer("into int", "into a whole number", "into bool", "into true/false",
		"into string", "into a string", "!!str", "string", "!!map", "mapping", "!!seq", "list").Replace(msg)
	ce.Msg = strings.Join(strings.Fields(msg), " ")
	return ce
}

var unmarshalerType = reflect.TypeOf((*yaml.Unmarshaler)(nil)).Elem()

// walker checks that every key names a field, and records which field
// each line holds (for yaml.v3's line-numbered type errors).
type walker struct {
	lines map[int]string
	nulls map[string]bool // fields written as null
	err   *ConfigError
}

// record notes that line holds path; nodes are visited parents first, so
// a line keeps the most specific field on it.
func (w *walker) record(line int, path string) {
	if path != "" {
		w.lines[line] = path
	}
}

func (w *walker) lineOf(path string) int {
	best := 0
	for line, p := range w.lines {
		if p == path && (best == 0 || line < best) {
			best = line
		}
	}
	return best
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func (w *walker) walk(n *yaml.Node, t reflect.Type, path string) {
	if w.err != nil || n == nil {
		return
	}
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	w.record(n.Line, path)
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		w.nulls[path] = true
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if reflect.PointerTo(t).Implements(unmarshalerType) {
		return
	}
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			return // the decoder reports the type mismatch
		}
		fields := yamlFields(t)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if k.Value == "<<" {
				continue
			}
			p := join(path, k.Value)
			w.record(k.Line, p)
			ft, ok := fields[k.Value]
			if !ok {
				names := slices.Sorted(maps.Keys(fields))
				w.err = &ConfigError{Field: p, Line: k.Line, Msg: "unknown field; known here: " + strings.Join(names, ", ")}
				return
			}
			w.walk(v, ft, p)
		}
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			return
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			p := join(path, k.Value)
			w.record(k.Line, p)
			w.walk(v, t.Elem(), p)
		}
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			return
		}
		for i, c := range n.Content {
			w.walk(c, t.Elem(), fmt.Sprintf("%s[%d]", path, i))
		}
	}
}

// yamlFields maps a struct's YAML keys to field types.
func yamlFields(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("yaml")
		name, _, _ := strings.Cut(tag, ",")
		if name == "-" || !f.IsExported() {
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		out[name] = f.Type
	}
	return out
}

var (
	siteNameRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$`)
	slotNameRe = regexp.MustCompile(`^[a-z0-9_]{1,63}$`)
)

func fieldErr(field, format string, args ...any) error {
	return &ConfigError{Field: field, Msg: fmt.Sprintf(format, args...)}
}
