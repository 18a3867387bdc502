# pgvault — build, test, benchmark, fuzz, demo.
# `make demo` and `make test` do all set-up a fresh Debian machine needs.

SHELL       := /bin/bash
.SHELLFLAGS := -eo pipefail -c
GO          ?= go
# cloud.google.com/go/storage's gRPC path (xDS, Envoy's protos) is never
# used by pgvault (it speaks GCS's JSON API): without it the binary is 20 MB
# smaller and every process, archive_command and restore_command included,
# starts sooner (docs/explanation/data-path.md); urfave/cli's man page and
# Markdown generators, never called, cost every process 2-3 ms more.
BUILD_TAGS  := disable_grpc_modules,urfave_cli_no_docs
export GOFLAGS := -tags=$(BUILD_TAGS)
BIN         := bin/pgvault
FUZZTIME    ?= 30s
TEST_TIMEOUT ?= 25m
# The integration tests against each object store's server (end to end,
# fault campaign, restart mid-backup): `make test` runs them in a process
# of their own beside the rest, which mostly waits on servers.
STORE_TESTS := ^(TestStoreEndToEnd.*|TestFaultCampaign(GCS|Swift|Azure)|TestFault.*RestartMidBackup)$$
# Packages whose tests are pure Go (no servers): run under the race detector.
RACE_PKGS   := ./chunk/... ./repo/... ./backup/... ./stream/... ./fs/... ./internal/... ./cmd/...

.PHONY: all build test unit deps bench fuzz torture demo lint clean

all: build

build:
	$(GO) build -trimpath -tags $(BUILD_TAGS) -o $(BIN) ./cmd/pgvault

deps:
	@.ci/install-deps

# Every test: unit tests under -race, then everything (integration included)
# without it. Fuzz targets run their seed corpus here.
test: deps
	@echo "== go vet"
	$(GO) vet ./...
	@echo "== unit tests (race detector)"
	$(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) $(RACE_PKGS) 2>&1 | grep -v '^\(=== \|--- PASS\)' | grep -v 'no test files'
	@echo "== all tests (the object stores' integration tests in a second process beside the rest)"
	@stores_log=$$(mktemp); \
	$(GO) test -count=1 -timeout $(TEST_TIMEOUT) -run '$(STORE_TESTS)' ./integration/ >"$$stores_log" 2>&1 & stores=$$!; \
	rc=0; $(GO) test -count=1 -timeout $(TEST_TIMEOUT) -skip '$(STORE_TESTS)' ./... 2>&1 | grep -v 'no test files' || rc=$$?; \
	src=0; wait $$stores || src=$$?; \
	echo "== the object stores' integration tests ($(STORE_TESTS))"; \
	grep -v '^\(=== \|--- PASS\)' "$$stores_log"; rm -f "$$stores_log"; \
	test $$rc -eq 0 -a $$src -eq 0

# Benchmarks: Go benchmarks now, peer runs as they land; results are
# written into docs/benchmarks.md with the machine and the date.
bench: deps build
	.ci/bench

# Every fuzz target in the module, $(FUZZTIME) each (see docs/reliability.md).
fuzz:
	FUZZTIME=$(FUZZTIME) .ci/fuzz

# The crash and fault campaigns in full (their short forms run in `make
# test`): TORTURE_KILLS kill -9s of each of wal stream, backup, prune and
# the agent at moments drawn from TORTURE_SEED, and FAULT_ROUNDS bit-flip
# rounds. The whole log goes to bin/torture.log.
TORTURE_KILLS ?= 20
TORTURE_SEED  ?= $(shell date +%s)
FAULT_ROUNDS  ?= 20
torture: deps
	@mkdir -p bin
	TORTURE_KILLS=$(TORTURE_KILLS) TORTURE_SEED=$(TORTURE_SEED) FAULT_ROUNDS=$(FAULT_ROUNDS) \
		$(GO) test -count=1 -v -timeout 90m -run '^(TestTorture.*|TestFault.*)$$' ./integration/ 2>&1 | \
		tee bin/torture.log | grep -E '^(=== RUN|\s*--- (PASS|FAIL)|PASS|FAIL|ok)|RESULT|_test.go:'

demo: deps build
	$(BIN) demo

lint:
	@test -z "$$(gofmt -l . | tee /dev/stderr)" || { echo "gofmt: files above need formatting"; exit 1; }
	$(GO) vet ./...
	$(GO) test -count=1 -run TestLayers .

clean:
	rm -rf bin
