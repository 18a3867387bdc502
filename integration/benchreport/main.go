// Command benchreport turns `go test -bench -count N` output into a
// Markdown section of docs/benchmarks.md: the machine, the date, and per
// benchmark the median and min-max of every reported unit.
//
//	go test -run '^$' -bench . -count 3 ./... | benchreport -doc docs/benchmarks.md -section go-bench
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"
)

func main() {
	doc := flag.String("doc", "docs/benchmarks.md", "Markdown file to update")
	section := flag.String("section", "go-bench", "name of the marked section to replace")
	title := flag.String("title", "Go benchmarks", "section heading")
	flag.Parse()
	raw, err := io.ReadAll(os.Stdin)
	if err != nil {
		fail(err)
	}
	body := render(*title, parse(string(raw)), string(raw))
	if err := replaceSection(*doc, *section, body); err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "benchreport:", err)
	os.Exit(1)
}

type result struct {
	pkg    string
	name   string
	values map[string][]float64 // unit -> one value per run
}

var benchLine = regexp.MustCompile(`^(Benchmark\S+?)(-\d+)?\s+\d+\s+(.*)$`)

func parse(out string) []*result {
	var order []*result
	byKey := map[string]*result{}
	pkg := ""
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "pkg: ") {
			pkg = strings.TrimPrefix(line, "pkg: github.com/pgvault/pgvault/")
			continue
		}
		m := benchLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		key := pkg + " " + m[1]
		r := byKey[key]
		if r == nil {
			r = &result{pkg: pkg, name: m[1], values: map[string][]float64{}}
			byKey[key] = r
			order = append(order, r)
		}
		f := strings.Fields(m[3])
		for i := 0; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				continue
			}
			r.values[f[i+1]] = append(r.values[f[i+1]], v)
		}
	}
	return order
}

func render(title string, results []*result, raw string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "## %s\n\n", title)
	fmt.Fprintf(&b, "Measured %s on %s. Reproduce with `make bench`.\n\n", time.Now().UTC().Format("2006-01-02"), machine())
	b.WriteString("| package | benchmark | median | min - max | runs |\n|---|---|---|---|---|\n")
	for _, r := range results {
		units := make([]string, 0, len(r.values))
		for u := range r.values {
			units = append(units, u)
		}
		sort.Slice(units, func(i, j int) bool {
			return unitRank(units[i]) < unitRank(units[j]) || unitRank(units[i]) == unitRank(units[j]) && units[i] < units[j]
		})
		for _, u := range units {
			vs := append([]float64(nil), r.values[u]...)
			sort.Float64s(vs)
			fmt.Fprintf(&b, "| %s | %s | %s %s | %s - %s | %d |\n", r.pkg, strings.TrimPrefix(r.name, "Benchmark"),
				num(vs[len(vs)/2]), u, num(vs[0]), num(vs[len(vs)-1]), len(vs))
		}
	}
	b.WriteString("\n<details><summary>raw go test output</summary>\n\n```\n")
	b.WriteString(strings.TrimSpace(raw))
	b.WriteString("\n```\n</details>\n")
	return b.String()
}

func unitRank(u string) int {
	switch u {
	case "MB/s":
		return 0
	case "ns/op":
		return 1
	}
	return 2
}

func num(v float64) string {
	switch {
	case v >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case v >= 1:
		return strconv.FormatFloat(v, 'f', 2, 64)
	}
	return strconv.FormatFloat(v, 'g', 3, 64)
}

// machine describes the host: CPU model, cores, memory, kernel, Go.
func machine() string {
	cpu := "unknown CPU"
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			if strings.HasPrefix(line, "model name") {
				cpu = strings.TrimSpace(strings.SplitN(line, ":", 2)[1])
				break
			}
		}
	}
	mem := ""
	if data, err := os.ReadFile("/proc/meminfo"); err == nil {
		f := strings.Fields(string(data))
		if len(f) > 1 {
			if kb, err := strconv.Atoi(f[1]); err == nil {
				mem = fmt.Sprintf(", %d GiB RAM", kb>>20)
			}
		}
	}
	kernel, _ := exec.Command("uname", "-r").Output()
	return fmt.Sprintf("%s, %d cores%s, Linux %s, %s", cpu, runtime.NumCPU(), mem, strings.TrimSpace(string(kernel)), runtime.Version())
}

// replaceSection swaps the text between <!-- BEGIN name --> and
// <!-- END name --> (appending the markers if the file lacks them).
func replaceSection(path, name, body string) error {
	data, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	begin, end := "<!-- BEGIN "+name+" -->", "<!-- END "+name+" -->"
	text := string(data)
	block := begin + "\n" + body + end
	i, j := strings.Index(text, begin), strings.Index(text, end)
	if i >= 0 && j > i {
		text = text[:i] + block + text[j+len(end):]
	} else {
		text = strings.TrimRight(text, "\n") + "\n\n" + block + "\n"
	}
	return os.WriteFile(path, []byte(text), 0o644)
}
