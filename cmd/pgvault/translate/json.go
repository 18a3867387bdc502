package translate

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
)

// parseJSONObject decodes a JSON object, numbers kept as json.Number,
// with the line of a syntax error.
func parseJSONObject(file string, data []byte) (map[string]any, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		line := 0
		var se *json.SyntaxError
		var te *json.UnmarshalTypeError
		switch {
		case errors.As(err, &se):
			line = lineAt(data, se.Offset)
		case errors.As(err, &te):
			line = lineAt(data, te.Offset)
		}
		return nil, &SyntaxError{File: file, Line: line, Msg: "not JSON: " + err.Error()}
	}
	if dec.More() {
		return nil, &SyntaxError{File: file, Line: lineAt(data, dec.InputOffset()), Msg: "more than one JSON value"}
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, &SyntaxError{File: file, Line: 1, Msg: "not a JSON object"}
	}
	return m, nil
}

func lineAt(data []byte, off int64) int {
	if off > int64(len(data)) {
		off = int64(len(data))
	}
	if off < 0 {
		off = 0
	}
	return bytes.Count(data[:off], []byte("\n")) + 1
}

// asInt reads a whole number from a JSON number or a string of digits.
func asInt(v any) (int, bool) {
	var s string
	switch v := v.(type) {
	case json.Number:
		s = v.String()
	case string:
		s = strings.TrimSpace(v)
	case int:
		return v, true
	default:
		return 0, false
	}
	if n, err := strconv.Atoi(s); err == nil {
		return n, true
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || f != math.Trunc(f) || math.Abs(f) > 1e9 {
		return 0, false
	}
	return int(f), true
}

// asBool reads a JSON boolean or a word such as "on", "yes", "y", "true".
func asBool(v any) (bool, bool) {
	switch v := v.(type) {
	case bool:
		return v, true
	case string:
		switch strings.ToLower(strings.TrimSpace(v)) {
		case "true", "on", "yes", "y", "1":
			return true, true
		case "false", "off", "no", "n", "0":
			return false, true
		}
	case json.Number:
		switch v.String() {
		case "1":
			return true, true
		case "0":
			return false, true
		}
	}
	return false, false
}

// asString reads a string or a number as text.
func asString(v any) (string, bool) {
	switch v := v.(type) {
	case string:
		return v, true
	case json.Number:
		return v.String(), true
	}
	return "", false
}

// sortedKeys lists a map's keys in order.
func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// typeNote is the reason for a value of the wrong type.
func typeNote(want string) string { return fmt.Sprintf("not %s: check the source file", want) }
