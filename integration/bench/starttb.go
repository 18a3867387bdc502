package bench

import (
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
)

// tryStart runs start (a server package's Start, which ends the test
// with t.Fatal when its server cannot start) under a startTB, in a
// goroutine of its own, and returns what it returned or why it failed.
// A benchmark that measures several servers uses it to report one that
// does not start and go on with the others.
func tryStart[T any](t testing.TB, start func(testing.TB) T) (T, error) {
	tb := &startTB{TB: t}
	var got T
	finished := false
	done := make(chan struct{})
	go func() {
		defer close(done)
		got = start(tb)
		finished = true
	}()
	<-done
	var zero T
	if err := tb.err(); err != nil {
		return zero, err
	}
	if !finished {
		return zero, errors.New("the start ended without a result or an error")
	}
	return got, nil
}

// startTB is the testing.TB tryStart runs a start under. Everything but
// failing goes to the test (TempDir, Cleanup, Logf: a started server
// lives until the test ends); failures are kept instead, and Fatal,
// FailNow and Skip end the calling goroutine (tryStart's) instead of the
// test's.
type startTB struct {
	testing.TB
	mu     sync.Mutex
	failed []string
}

func (s *startTB) Error(args ...any)                 { s.record(fmt.Sprint(args...)) }
func (s *startTB) Errorf(format string, args ...any) { s.record(fmt.Sprintf(format, args...)) }
func (s *startTB) Fail()                             { s.record("failed") }
func (s *startTB) Fatal(args ...any)                 { s.Error(args...); runtime.Goexit() }
func (s *startTB) Fatalf(format string, args ...any) { s.Errorf(format, args...); runtime.Goexit() }
func (s *startTB) FailNow()                          { s.Fail(); runtime.Goexit() }
func (s *startTB) Skip(args ...any)                  { s.record("skipped: " + fmt.Sprint(args...)); runtime.Goexit() }
func (s *startTB) Skipf(format string, args ...any)  { s.Skip(fmt.Sprintf(format, args...)) }
func (s *startTB) SkipNow()                          { s.Skip() }
func (s *startTB) Failed() bool                      { return s.err() != nil }

func (s *startTB) record(msg string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failed = append(s.failed, msg)
}

// err is every failure recorded, or nil.
func (s *startTB) err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.failed) == 0 {
		return nil
	}
	return errors.New(strings.Join(s.failed, "; "))
}
