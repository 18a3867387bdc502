package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/pgvault/pgvault/internal/service"
	"golang.org/x/term"
)

// printer renders a command's result as text, as one JSON document, or
// as newline-delimited JSON events (ndjson: progress, phases, then the
// result, each a line a pipeline can act on while the command runs).
type printer struct {
	json   bool
	ndjson bool
	w      io.Writer
}

func newPrinter(format string, w io.Writer) (*printer, error) {
	switch format {
	case "text", "":
		return &printer{w: w}, nil
	case "json":
		return &printer{json: true, w: w}, nil
	case "ndjson":
		return &printer{json: true, ndjson: true, w: w}, nil
	}
	return nil, usagef("--output %q: use text, json or ndjson", format)
}

// event writes one ndjson line {"event": kind, "time": ..., fields...};
// nothing in the other formats.
func (p *printer) event(kind string, fields map[string]any) {
	if !p.ndjson {
		return
	}
	line := map[string]any{"event": kind, "time": time.Now().UTC().Format(time.RFC3339Nano)}
	for k, v := range fields {
		line[k] = v
	}
	json.NewEncoder(p.w).Encode(line) // a lost progress line is not worth failing the command
}

// emit writes v as JSON, or calls text to write the human form.
func (p *printer) emit(v any, text func(w io.Writer)) error {
	if p.ndjson {
		return json.NewEncoder(p.w).Encode(map[string]any{"event": "result", "time": time.Now().UTC().Format(time.RFC3339Nano), "result": v})
	}
	if p.json {
		enc := json.NewEncoder(p.w)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	text(p.w)
	return nil
}

// terminal reports whether progress bars make sense: text output to a tty.
func (p *printer) terminal() bool {
	if p.json {
		return false
	}
	f, ok := p.w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// explain turns an error into the line the operator reads.
func explain(err error) string {
	switch {
	case errors.Is(err, context.Canceled):
		return "interrupted"
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		if !strings.Contains(err.Error(), "disk full") {
			return "disk full: " + err.Error() + ": free space on that file system, or use another folder, and run the command again"
		}
	}
	return err.Error()
}

// progress draws a one-line progress report on a terminal, at most a few
// times a second, or writes it as ndjson "progress" events once a
// second. It is a no-op otherwise.
type progress struct {
	w      io.Writer
	on     bool
	events *printer // ndjson
	label  string
	start  time.Time
	last   time.Time
	// The last values, for the final event.
	done1, total1 int64
	unit          string
	pending       bool
}

func newProgress(p *printer, w io.Writer, label string) *progress {
	pr := &progress{w: w, on: p.terminal(), label: label, start: time.Now()}
	if p.ndjson {
		pr.events = p
	}
	return pr
}

// update shows done of total (total 0: unknown) bytes or items.
func (pr *progress) update(done, total int64, unit string) {
	if pr.events != nil {
		pr.done1, pr.total1, pr.unit, pr.pending = done, total, unit, true
		if time.Since(pr.last) >= time.Second {
			pr.last = time.Now()
			pr.emitEvent()
		}
		return
	}
	if !pr.on || time.Since(pr.last) < 200*time.Millisecond {
		return
	}
	pr.last = time.Now()
	el := time.Since(pr.start)
	line := pr.label + " "
	if total > 0 {
		frac := float64(done) / float64(total)
		const width = 30
		filled := int(frac * width)
		bar := make([]byte, width)
		for i := range bar {
			if i < filled {
				bar[i] = '='
			} else {
				bar[i] = ' '
			}
		}
		line += fmt.Sprintf("[%s] %3.0f%% ", bar, frac*100)
	}
	if unit == "bytes" {
		line += service.HumanBytes(done)
		if total > 0 {
			line += " / " + service.HumanBytes(total)
		}
		line += fmt.Sprintf("  %.0f MB/s", service.MBPerSecond(done, el))
	} else {
		line += fmt.Sprintf("%d", done)
		if total > 0 {
			line += fmt.Sprintf(" / %d %s", total, unit)
		}
	}
	fmt.Fprintf(pr.w, "\r\033[K%s", line)
}

func (pr *progress) emitEvent() {
	pr.pending = false
	pr.events.event("progress", map[string]any{"task": pr.label, "done": pr.done1, "total": pr.total1, "unit": pr.unit,
		"elapsed_seconds": time.Since(pr.start).Seconds()})
}

// done clears the progress line (ndjson: writes the last values).
func (pr *progress) done() {
	if pr.events != nil && pr.pending {
		pr.emitEvent()
	}
	if pr.on {
		fmt.Fprint(pr.w, "\r\033[K")
	}
}
