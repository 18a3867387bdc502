package translate

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// fuzzTranslate checks that no input makes the translator panic, and that
// every translation is well-formed YAML that repeats no password given
// as "password=" in a conninfo.
func fuzzTranslate(f *testing.F, tool Tool, seeds ...string) {
	for _, s := range seeds {
		if data, err := os.ReadFile(filepath.Join("testdata", s)); err == nil {
			f.Add(data)
		} else {
			f.Add([]byte(s))
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		res, err := Translate(tool, Source{Path: "in", Data: data}, nil, Options{})
		if err != nil {
			return
		}
		var v any
		if err := yaml.Unmarshal(res.YAML, &v); err != nil {
			t.Fatalf("output is not YAML: %v\n%s", err, res.YAML)
		}
		if strings.Contains(string(data), "password=SEKRIT") && strings.Contains(string(res.YAML), "SEKRIT") {
			t.Fatalf("password in output:\n%s", res.YAML)
		}
	})
}

func FuzzPghoard(f *testing.F) {
	fuzzTranslate(f, Pghoard, "pghoard.json", `{"backup_sites": {"a": {"nodes": ["host=h password=SEKRIT"]}}}`)
}

func FuzzPgBackRest(f *testing.F) {
	fuzzTranslate(f, PgBackRest, "pgbackrest.conf", "[a]\npg1-path=/x\n")
}

func FuzzBarman(f *testing.F) {
	fuzzTranslate(f, Barman, "barman.conf", "[a]\nconninfo = host=h password=SEKRIT\n")
}

func FuzzWALG(f *testing.F) {
	fuzzTranslate(f, WALG, "walg.json", "PGHOST: h\nWALG_FILE_PREFIX: /x\n")
}

func FuzzParseINI(f *testing.F) {
	f.Add([]byte("[a]\nk = v\n  more\n; c\n"), true)
	f.Add([]byte("[global]\nrepo1-path=/x\n"), false)
	f.Fuzz(func(t *testing.T, data []byte, barman bool) {
		d := pgbrDialect
		if barman {
			d = barmanDialect
		}
		secs, err := parseINI("f", data, d)
		if err != nil {
			return
		}
		for _, s := range secs {
			if s.name == "" {
				t.Fatal("empty section name")
			}
			for _, o := range s.options {
				if o.key == "" || o.line < 1 {
					t.Fatalf("option %+v", o)
				}
			}
		}
	})
}

func FuzzConninfo(f *testing.F) {
	f.Add("host=h port=5432 password='a b\\'c' user=u")
	f.Add("postgres://u:pw@h:5432/db?password=x&sslmode=require")
	f.Fuzz(func(t *testing.T, s string) {
		params, err := parseConninfo(s)
		if err != nil {
			return
		}
		// Building and parsing again gives the same parameters.
		again, err := parseConninfo(buildConninfo(params))
		if err != nil {
			t.Fatalf("rebuilt %q does not parse: %v", buildConninfo(params), err)
		}
		if len(again) != len(params) {
			t.Fatalf("%q: %v then %v", s, params, again)
		}
		out, _, err := withoutPassword(s)
		if err == nil && strings.HasPrefix(s, "host") {
			if ps, err := parseConninfo(out); err == nil {
				for _, p := range ps {
					if p.key == "password" {
						t.Fatalf("password left in %q", out)
					}
				}
			}
		}
	})
}
