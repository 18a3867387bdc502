package service

import (
	"fmt"
	"slices"
	"strings"
)

// Problems is an error that reports what a check found (a backup with bad
// pages, a gap in the WAL, a verify that failed, a damaged repository),
// as opposed to a failure to run the check: the CLI exits 3 for it.
type Problems struct{ Msg string }

func (p *Problems) Error() string { return p.Msg }

func problemsf(format string, args ...any) error { return &Problems{fmt.Sprintf(format, args...)} }

// ShortID is the 8-character form of a snapshot ID that people read.
func ShortID(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	return id
}

// nonNil returns a sorted copy of s, never nil, so JSON shows [] rather
// than null.
func nonNil(s []string) []string {
	out := slices.Clone(s)
	if out == nil {
		out = []string{}
	}
	return out
}

// sortedNonNil is nonNil, sorted.
func sortedNonNil(s []string) []string {
	out := nonNil(s)
	slices.Sort(out)
	return out
}

func joinSemi(s []string) string { return strings.Join(s, "; ") }

func joinComma(s []string) string { return strings.Join(s, ", ") }
