// Package bench measures pgvault against its peers (pg_basebackup,
// pgBackRest, restic, barman) on a real PostgreSQL 15 cluster and writes
// the results into docs/benchmarks.md (the marked section "peer-bench")
// and a bar chart, docs/benchmarks.png.
//
// The benchmark itself is a test behind the `bench` build tag, so
// `go test ./...` never runs it:
//
//	SCALE=10 COUNT=1 go test -tags bench -run TestPeers -timeout 4h -v ./integration/bench/
//
// `make bench` runs it after the Go benchmarks (.ci/bench), and installs
// the peers from Debian first. Environment:
//
//	SCALE           pgbench scale (default 100; 10 for a quick run)
//	COUNT           rounds; every figure is a median with min-max (default 3)
//	BENCH_PGBENCH_SECONDS  pgbench -T before the third backup (default 60)
//	BENCH_STREAM_SECONDS   pgbench -T while `pgvault wal stream` runs (default 30)
//	BENCH_WAL_SEGMENTS     segments pushed one by one by each archiver (default 16)
//	BENCH_DOC, BENCH_CHART where to write (default docs/benchmarks.md, docs/benchmarks.png)
//	BENCH_BARMAN=0         leave barman out
//	BENCH_NOTE             a remark about this run, printed at the top of the section
//
// Each round creates new repositories for every tool and runs the tools
// in a rotated order, so machine drift (other work on the host, cache
// state) hits all of them alike. Every process the benchmark starts in
// the background runs in its own process group and is recorded in a
// ledger (os.TempDir()/pgvault-bench-ledger); a later run stops what a
// killed run left behind (servers, mounts, process groups) before it
// starts.
//
// After a change to the chart's code, draw it again from the table already
// in the document, without measuring again:
//
//	go test -tags bench -run TestChartFromDoc ./integration/bench/
//
// The non-test files hold the pure parts (statistics, the Markdown
// report, the PNG chart with a built-in bitmap font); they have unit
// tests that do run under `go test ./...`.
package bench
