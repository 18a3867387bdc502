// Package pgvault_test holds module-wide tests: the dependency direction
// between the top-level folders.
package pgvault_test

import (
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
)

// allowed lists which of our top-level folders each may import. The arrows
// of the design: cmd -> {fs, backup, stream} -> repo -> chunk; fs, backup
// and stream never import each other. integration tests may use anything.
var allowed = map[string][]string{
	"chunk":       {},
	"repo":        {"chunk", "repo"},
	"stream":      {"repo", "chunk", "stream"},
	"backup":      {"repo", "chunk", "backup", "stream/wal"},
	"fs":          {"repo", "chunk", "fs", "stream/wal"},
	"cmd":         {"*"},
	"integration": {"*"},
}

const module = "github.com/pgvault/pgvault/"

func TestLayers(t *testing.T) {
	out, err := exec.Command("go", "list", "-json=ImportPath,Imports", "./...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for dec.More() {
		var p struct {
			ImportPath string
			Imports    []string
		}
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
		if p.ImportPath+"/" == module {
			continue // this test's own package
		}
		rel := strings.TrimPrefix(p.ImportPath, module)
		top, _, _ := strings.Cut(rel, "/")
		rules, ok := allowed[top]
		if !ok {
			t.Errorf("%s: top-level folder %q is not in the design's layout", p.ImportPath, top)
			continue
		}
		for _, imp := range p.Imports {
			if !strings.HasPrefix(imp, module) {
				continue
			}
			target := strings.TrimPrefix(imp, module)
			if !permitted(rules, target) {
				t.Errorf("%s imports %s: %s may only import %v", rel, target, top, rules)
			}
		}
	}
}

func permitted(rules []string, target string) bool {
	for _, r := range rules {
		if r == "*" || target == r || strings.HasPrefix(target, r+"/") {
			return true
		}
	}
	return false
}
