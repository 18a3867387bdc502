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
//	BENCH_INGEST_MB        WAL backlog (MiB) each receiver catches up in the ingest ceiling step (default 1024)
//	BENCH_DOC, BENCH_CHART where to write (default docs/benchmarks.md, docs/benchmarks.png)
//	BENCH_BARMAN=0         leave barman out
//	BENCH_NOTE             a remark about this run, printed at the top of the section
//
// TestMountScales, in the same package, is the instant-restore
// benchmark: at every pgbench scale of MOUNT_SCALES it measures the time
// to first query (`SELECT count(*) FROM pgbench_branches`) from an
// instant mount against `pgbackrest restore` and `pgvault restore` plus
// start, a cold read of the whole backup through the browse mount against
// restore throughput and `restic mount`, and `pgbench -S` on the instant
// mount against the original cluster. It writes the section "mount-bench"
// of docs/benchmarks.md; .ci/bench runs it after TestPeers:
//
//	MOUNT_SCALES="10 30" COUNT=1 go test -tags bench -run TestMountScales -timeout 4h -v ./integration/bench/
//
//	MOUNT_SCALES           pgbench scales (default "100 300"; "10 30" for a quick run)
//	COUNT                  rounds per scale (default 3)
//	MOUNT_PGBENCH_SECONDS  pgbench -S -c 2 -T of the measured run (default 20)
//	MOUNT_WARMUP_SECONDS   pgbench -S -c 2 -T of the warm-up run before it (default 20)
//	MOUNT_LATENCY_MS       also time the instant mount with every repository request
//	                       this much slower, as an object store in another region
//	                       (the test fault backend's latency; default 30, 0 skips it)
//	BENCH_DOC, BENCH_NOTE  as above
//	BENCH_MOUNT=0          (.ci/bench) skip it
//
// TestStores, in the same package, is the per-store benchmark: on one
// pgbench cluster at STORE_SCALE, for every store a repository can live
// on (file, s3, sftp, gs, azure, swift), each served on loopback by the
// server the integration tests start (integration/minio, integration/sshd,
// integration/fakegcs, integration/azurite, integration/swiftaio), it
// measures a full backup into a new repository, a restore of it into a
// new folder and the instant mount's time to first query, each also as
// a ratio to the file store: pgvault's own cost per store, without a
// network's. A store whose server does not start is reported as such.
// It writes the section "store-bench" of docs/benchmarks.md; .ci/bench
// runs it after TestMountScales:
//
//	STORE_SCALE=5 COUNT=1 go test -tags bench,disable_grpc_modules,urfave_cli_no_docs -run TestStores -timeout 1h -v ./integration/bench/
//
//	STORE_SCALE            pgbench scale (default 100; 5 for a quick run)
//	COUNT                  rounds (default 3)
//	BENCH_DOC, BENCH_NOTE  as above
//	BENCH_STORES=0         (.ci/bench) skip it
//
// TestRemoteMount, in the same package, is the remote instant-restore
// benchmark: one pgbench cluster at REMOTE_SCALE backed up into a file
// repository and into S3 (MinIO on loopback, integration/minio); every
// round, `pgbench -S -c 2 -T 60 -P 5` on the original cluster restarted
// on a cold page cache, and on a server started on a fresh instant mount
// (cold page cache, empty local cache) from the file repository, from S3,
// and from S3 with every request REMOTE_LATENCY_MS slower (the test fault
// backend's latency). It records the time to first query and the TPS of
// every 5-second window, evaluates the goals for instant restore from an
// object store, and writes the section "remote-mount-bench" of
// docs/benchmarks.md; .ci/bench runs it last:
//
//	REMOTE_SCALE=10 COUNT=1 go test -tags bench,disable_grpc_modules,urfave_cli_no_docs -run TestRemoteMount -timeout 1h -v ./integration/bench/
//
//	REMOTE_SCALE           pgbench scale (default 100; 10 for a quick run)
//	COUNT                  rounds (default 3)
//	REMOTE_SECONDS         pgbench -T (default 60)
//	REMOTE_LATENCY_MS      the slower S3 row's added delay per request (default 30)
//	REMOTE_PROFILES=DIR    write each mount's CPU profile there (diagnostics)
//	BENCH_DOC, BENCH_NOTE  as above
//	BENCH_REMOTE=0         (.ci/bench) skip it
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
// reports, the PNG chart with a built-in bitmap font, tryStart that lets
// TestStores go on when one server does not start); they have unit tests
// that do run under `go test ./...`.
package bench
