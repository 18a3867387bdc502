//go:build pgvault_testfaults

package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/pgvault/pgvault/internal/service"
	"github.com/pgvault/pgvault/repo/backend"
	"github.com/pgvault/pgvault/repo/backend/faulty"
	"github.com/pgvault/pgvault/repo/backend/retry"
)

// Fault injection for pgvault's own fault campaigns (integration/faults_test.go),
// compiled only into the test build (go build -tags pgvault_testfaults,
// which integration/ does); the release binary has faults_release.go.
//
// When PGVAULT_TEST_FAULTS is set, the storage backend is wrapped in
// package faulty, under the retry wrapper, exactly as the library tests
// do it: retry(faulty(backend)). The value is a comma-separated list:
//
//	seed=N          fault generator seed (default 1)
//	error=P         transient error per call (probability 0..1)
//	latency=P       added latency per call, of latency_ms (default 20)
//	shortread=P     Load fails with backend.ErrShortRead
//	partial=P       Save stores a truncated prefix, then fails
//	bitflip=P       Load returns data with one bit flipped, as a success
//	types=a+b       only these object types: config, key, pack, index,
//	                snapshot, lock, wal (default: all)
//	attempts=N      retry attempts (default retry.DefaultMaxAttempts)
//	delay=D         first retry delay, e.g. 10ms (default retry's)
//
// PGVAULT_TEST_FAULTS_REPORT=FILE appends one JSON line with the faults
// injected when the backend is closed. An unparsable value is a usage
// error: a campaign must not silently run without its faults.
const testFaultsEnv = "PGVAULT_TEST_FAULTS"

type testFaults struct {
	opts  faulty.Options
	retry retry.Options
}

func parseTestFaults(spec string) (testFaults, error) {
	tf := testFaults{opts: faulty.Options{Seed: 1, LatencyDuration: 20 * time.Millisecond}}
	for _, kv := range strings.Split(spec, ",") {
		if kv = strings.TrimSpace(kv); kv == "" {
			continue
		}
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return tf, fmt.Errorf("%s: %q is not key=value", testFaultsEnv, kv)
		}
		prob := func(dst *float64) error {
			p, err := strconv.ParseFloat(v, 64)
			if err != nil || p < 0 || p > 1 {
				return fmt.Errorf("%s: %s=%q: want a probability from 0 to 1", testFaultsEnv, k, v)
			}
			*dst = p
			return nil
		}
		var err error
		switch k {
		case "seed":
			tf.opts.Seed, err = strconv.ParseInt(v, 10, 64)
		case "error":
			err = prob(&tf.opts.Error)
		case "latency":
			err = prob(&tf.opts.Latency)
		case "latency_ms":
			var ms int
			ms, err = strconv.Atoi(v)
			tf.opts.LatencyDuration = time.Duration(ms) * time.Millisecond
		case "shortread":
			err = prob(&tf.opts.ShortRead)
		case "partial":
			err = prob(&tf.opts.PartialWrite)
		case "bitflip":
			err = prob(&tf.opts.BitFlip)
		case "types":
			for _, name := range strings.Split(v, "+") {
				t, terr := fileTypeByName(name)
				if terr != nil {
					return tf, terr
				}
				tf.opts.Types = append(tf.opts.Types, t)
			}
		case "attempts":
			tf.retry.MaxAttempts, err = strconv.Atoi(v)
		case "delay":
			tf.retry.InitialDelay, err = time.ParseDuration(v)
		default:
			return tf, fmt.Errorf("%s: unknown key %q", testFaultsEnv, k)
		}
		if err != nil {
			return tf, fmt.Errorf("%s: %s=%q: %v", testFaultsEnv, k, v, err)
		}
	}
	return tf, nil
}

func fileTypeByName(name string) (backend.FileType, error) {
	for _, t := range backend.AllTypes {
		if t.String() == name {
			return t, nil
		}
	}
	return 0, fmt.Errorf("%s: unknown object type %q", testFaultsEnv, name)
}

// testFaultsHook returns, when PGVAULT_TEST_FAULTS is set, what makes a
// site's storage retry(faulty(backend)), exactly as the library tests do
// it. The CLI and the agent both apply it, so the campaigns reach both.
func testFaultsHook() (func(*service.Site), error) {
	spec, ok := os.LookupEnv(testFaultsEnv)
	if !ok || spec == "" {
		return nil, nil
	}
	tf, err := parseTestFaults(spec)
	if err != nil {
		return nil, err
	}
	report := os.Getenv(testFaultsEnv + "_REPORT")
	return func(s *service.Site) {
		inner := s.Wrap
		s.Wrap = func(be backend.Backend) backend.Backend {
			if inner != nil {
				be = inner(be)
			}
			return &reportingFaulty{Backend: faulty.New(be, tf.opts), report: report}
		}
		if tf.retry.MaxAttempts != 0 {
			s.Retry.MaxAttempts = tf.retry.MaxAttempts
		}
		if tf.retry.InitialDelay != 0 {
			s.Retry.InitialDelay = tf.retry.InitialDelay
		}
	}, nil
}

// reportingFaulty appends the fault counts to a file when closed.
type reportingFaulty struct {
	*faulty.Backend
	report string
}

var _ backend.Backend = (*reportingFaulty)(nil)

func (f *reportingFaulty) Close() error {
	if f.report != "" {
		c := f.Counts()
		line, _ := json.Marshal(map[string]any{
			"pid": os.Getpid(), "command": strings.Join(os.Args[1:], " "),
			"errors": c.Errors, "latencies": c.Latencies, "short_reads": c.ShortReads,
			"partial_writes": c.PartialWrites, "bit_flips": c.BitFlips,
		})
		if fh, err := os.OpenFile(f.report, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o666); err == nil {
			fh.Write(append(line, '\n'))
			fh.Close()
		}
	}
	return f.Backend.Close()
}
