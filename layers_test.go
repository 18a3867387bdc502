// Package pgvault_test holds module-wide tests: the dependency direction
// between the packages, for code and for tests.
package pgvault_test

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// leaves are packages that import nothing of pgvault's, so any layer may
// use them (docs/explanation/design.md, "Packages").
var leaves = []string{"internal/atomicfile", "internal/redact", "internal/pg"}

// allowed lists, for each package path prefix (the longest one that
// matches wins), what it may import besides the leaves. The arrows of the
// design: cmd -> internal/service -> {fs, backup, stream} -> repo -> chunk;
// fs, backup and stream never import each other.
var allowed = map[string][]string{
	"chunk":            {"chunk"},
	"internal":         {}, // a leaf unless listed below
	"repo":             {"chunk", "repo"},
	"stream":           {"repo", "chunk", "stream"},
	"backup":           {"repo", "chunk", "backup"},
	"fs":               {"repo", "chunk", "fs"},
	"internal/service": {"repo", "chunk", "stream", "backup", "fs", "internal"},
	"cmd":              {"*"},
	"integration":      {"*"},
}

// testOnly are packages that exist for tests (helpers, fakes, fault
// injection, the real servers the tests start): any test may use them, and
// no non-test code outside integration/ may import them.
var testOnly = []string{"testing", "repo/backend/mem", "repo/backend/faulty", "repo/backend/backendtest", "repo/repotest", "fs/fstest",
	"integration/minio", "integration/fakegcs", "integration/sshd", "integration/pgtest", "integration/promtool", "integration/swiftaio", "integration/azurite"}

const module = "github.com/pgvault/pgvault/"

type pkg struct {
	ImportPath   string
	Imports      []string
	TestImports  []string
	XTestImports []string
}

func listPackages(t *testing.T, args ...string) []pkg {
	t.Helper()
	out, err := exec.Command("go", append([]string{"list", "-json=ImportPath,Imports,TestImports,XTestImports"}, args...)...).Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	var pkgs []pkg
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for dec.More() {
		var p pkg
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, p)
	}
	return pkgs
}

func TestLayers(t *testing.T) {
	for _, p := range listPackages(t, "./...") {
		if p.ImportPath+"/" == module {
			continue // this test's own package
		}
		rel := strings.TrimPrefix(p.ImportPath, module)
		rules, ok := rulesFor(rel)
		if !ok {
			t.Errorf("%s: top-level folder is not in the design's layout", rel)
			continue
		}
		check := func(kind string, imports []string) {
			for _, imp := range imports {
				target, ours := strings.CutPrefix(imp, module)
				if !ours || target == rel || permitted(rules, target) {
					continue
				}
				t.Errorf("%s %simports %s: it may only import %v and the leaves %v", rel, kind, target, rules, leaves)
			}
		}
		check("", p.Imports)
		// A test may use the test helpers of lower layers, never an upper layer.
		check("(in a test) ", without(p.TestImports, testOnly))
		check("(in an external test) ", without(p.XTestImports, append(testOnly, rel)))
		if !strings.HasPrefix(rel, "integration") && !isTestOnly(rel) {
			for _, imp := range p.Imports {
				if isTestOnly(strings.TrimPrefix(imp, module)) {
					t.Errorf("%s imports the test-only package %s outside its tests", rel, imp)
				}
			}
		}
	}
}

// TestReleaseBinaryHasNoTestCode is the check DESIGN names: the release
// binary links no test package (fault injection, in-memory backends,
// package testing).
func TestReleaseBinaryHasNoTestCode(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "./cmd/pgvault").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	for _, dep := range strings.Fields(string(out)) {
		if isTestOnly(strings.TrimPrefix(dep, module)) {
			t.Errorf("the release binary links %s", dep)
		}
	}
}

// TestReleaseBinaryIgnoresTestFaults builds the release binary and checks
// that it does not know the variable that turns fault injection on in the
// test build: setting it on a production host must do nothing.
func TestReleaseBinaryIgnoresTestFaults(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "pgvault")
	if out, err := exec.Command("go", "build", "-o", bin, "./cmd/pgvault").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(data, []byte("PGVAULT_TEST_FAULTS")) {
		t.Error("the release binary holds the name PGVAULT_TEST_FAULTS: fault injection is compiled in")
	}
}

func rulesFor(rel string) ([]string, bool) {
	best, found := "", false
	for prefix := range allowed {
		if (rel == prefix || strings.HasPrefix(rel, prefix+"/")) && len(prefix) >= len(best) {
			best, found = prefix, true
		}
	}
	return allowed[best], found
}

func permitted(rules []string, target string) bool {
	for _, r := range append(slices.Clone(rules), leaves...) {
		if r == "*" || target == r || strings.HasPrefix(target, r+"/") {
			return true
		}
	}
	return false
}

func isTestOnly(rel string) bool { return slices.Contains(testOnly, rel) }

// without drops from imports the packages of ours named in drop.
func without(imports, drop []string) []string {
	var out []string
	for _, imp := range imports {
		if !slices.Contains(drop, strings.TrimPrefix(imp, module)) {
			out = append(out, imp)
		}
	}
	return out
}
