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

// printer renders a command's result as text or as one JSON document.
type printer struct {
	json bool
	w    io.Writer
}

func newPrinter(format string, w io.Writer) (*printer, error) {
	switch format {
	case "text", "":
		return &printer{w: w}, nil
	case "json":
		return &printer{json: true, w: w}, nil
	}
	return nil, usagef("--output %q: use text or json", format)
}

// emit writes v as JSON, or calls text to write the human form.
func (p *printer) emit(v any, text func(w io.Writer)) error {
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
// times a second. It is a no-op when out is not a terminal.
type progress struct {
	w     io.Writer
	on    bool
	label string
	start time.Time
	last  time.Time
}

func newProgress(p *printer, w io.Writer, label string) *progress {
	return &progress{w: w, on: p.terminal(), label: label, start: time.Now()}
}

// update shows done of total (total 0: unknown) bytes or items.
func (pr *progress) update(done, total int64, unit string) {
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

// done clears the progress line.
func (pr *progress) done() {
	if pr.on {
		fmt.Fprint(pr.w, "\r\033[K")
	}
}
