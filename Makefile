# edged — build, test and measure.
CARGO ?= cargo

# One build serves `make test` and the mutant runner: same features, same cargo profile.
TEST_FLAGS = --workspace --locked --all-features
# Where the test runner leaves its JUnit results (profile `ci` of .config/nextest.toml).
JUNIT = target/nextest/ci/junit.xml
# The pure cores (no I/O) that cargo-mutants mutates in `make mutants`, and where it writes.
PURE_CORES = relay/src/core.rs relay/src/exec_core.rs store/src/evict.rs
PURE_CORES_OUT = target/fi/pure-cores
# The test targets each pure-core mutant runs against, in the mutated file's crate.
PURE_CORES_TESTS = --lib --test model
# cargo-mutants sets each test timeout from the unmutated run; this floor keeps a loaded
# machine from calling a slow test a timeout.
MUTANTS_TEST_TIMEOUT_MIN_S = 120

.PHONY: build test lint bench bench-deliver bench-peers demo mutants edge-fi edge-fi-quick sim sim-soak clean \
	release man completions deb deb-check

build:
	$(CARGO) build --release --workspace

## The shipped binary (release profile: line tables kept for backtraces; the package strips them
## into its -dbgsym companion).
release:
	$(CARGO) build --release --locked -p edged

## Manual pages (edged.1 and one per command), generated from the command line's definition.
MAN_DIR = target/release/man
man: release
	rm -rf $(MAN_DIR) && mkdir -p $(MAN_DIR)
	target/release/edged man --out $(MAN_DIR)
	gzip -9n $(MAN_DIR)/*.1

## Shell completions for bash, zsh and fish.
COMPLETIONS_DIR = target/release/completions
completions: release
	rm -rf $(COMPLETIONS_DIR) && mkdir -p $(COMPLETIONS_DIR)
	target/release/edged completions bash > $(COMPLETIONS_DIR)/edged.bash
	target/release/edged completions zsh > $(COMPLETIONS_DIR)/_edged
	target/release/edged completions fish > $(COMPLETIONS_DIR)/edged.fish

## The offline package for airgapped hosts: target/debian/edged_<version>-1_<arch>.deb (stripped
## binary, hardened unit, system user, example config, man pages, completions) and
## edged-dbgsym_…ddeb (the debug info). Install from a stick with `dpkg -i`; no network needed.
CARGO_DEB_VERSION = 3.8.0
deb: man completions
	@command -v cargo-deb >/dev/null 2>&1 || $(CARGO) install --locked --version $(CARGO_DEB_VERSION) cargo-deb
	$(CARGO) deb -p edged --locked --no-build

## Installs the package on this machine (as root, without network where the kernel allows it),
## checks what it installed, and removes it again (CI runs this).
deb-check: deb
	./scripts/deb-check.sh target/debian

## The main job: a local 4-node fleet seeded from a directory (see scripts/demo.sh).
demo:
	$(CARGO) build --release --locked -p edged
	./scripts/demo.sh

## The test command (CI runs exactly this): unit, model, crash and integration tests through
## cargo-nextest (one process per test; JUnit in $(JUNIT)), and the doc tests. Both always
## run; the target fails if either does. The doc tests go first so the runner's summary is
## the last line.
test:
	@command -v cargo-nextest >/dev/null 2>&1 || $(CARGO) install --locked cargo-nextest
	@status=0; \
	$(CARGO) test --doc $(TEST_FLAGS) || status=1; \
	$(CARGO) nextest run $(TEST_FLAGS) --profile ci || status=1; \
	echo "JUnit results: $(JUNIT)"; \
	exit $$status

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings
	$(CARGO) clippy --workspace --all-targets --all-features --locked -- -D warnings

## Mutation testing of the pure cores (not run in CI): cargo-mutants over $(PURE_CORES), each
## mutant against its crate's unit tests and its model test (the tests that claim to pin the
## cores' decisions; the crates' slower integration tests are left out so that one mutant costs
## seconds, not a minute); the caught ratio goes to
## target/fi/results/pure-cores.json for the traceability report. cargo-mutants exits 2 when
## mutants were missed and 3 on timeouts: those runs are complete and still scored.
mutants:
	@command -v cargo-mutants >/dev/null 2>&1 || $(CARGO) install --locked cargo-mutants
	@status=0; \
	$(CARGO) mutants --test-tool nextest $(addprefix --file ,$(PURE_CORES)) \
		--minimum-test-timeout $(MUTANTS_TEST_TIMEOUT_MIN_S) --output $(PURE_CORES_OUT) \
		-- $(PURE_CORES_TESTS) || status=$$?; \
	case $$status in 0|2|3) ;; *) echo "cargo mutants failed ($$status)" >&2; exit $$status;; esac
	$(CARGO) run -q --locked -p fi-suite -- pure-cores $(PURE_CORES_OUT)/mutants.out/outcomes.json $(PURE_CORES)

## Failure injection against real processes, mutants, and the traceability report
## (traceability/report.{md,json,html}); see fi-suite/. Installs what the host scenarios need
## (scripts/fi-deps.sh), builds the shipped and the fault-injection edged, runs the tests, every
## scenario and every mutant. Exits non-zero when an invariant is uncovered, failing or vacuous.
EDGE_FI = $(CARGO) run -q --locked -p fi-suite --
EDGE_FI_FLAGS ?=
edge-fi:
	./scripts/fi-deps.sh
	$(EDGE_FI) all $(EDGE_FI_FLAGS)

## The quick subset (every invariant still covered); CI runs it after `make test` with
## EDGE_FI_FLAGS=--reuse-tests.
edge-fi-quick:
	./scripts/fi-deps.sh
	$(EDGE_FI) all --quick $(EDGE_FI_FLAGS)

## The fleet simulation (crate edge-sim; `make test` runs it too): 500 seeds, each a fleet of real
## stores, ledgers, executors and network nodes on a simulated network and power-loss disks,
## under a seeded fault plan, healed, converged and checked. A failing seed prints its replay
## command (EDGE_SIM_SEED=<seed>).
sim:
	$(CARGO) nextest run --locked -p edge-sim --features sim

## The long soak before a release (not run in CI): SIM_SOAK_SEEDS seeds from SIM_SOAK_FIRST, on
## every core, optimised.
SIM_SOAK_SEEDS ?= 20000
SIM_SOAK_FIRST ?= 0
sim-soak:
	$(CARGO) run --release --locked -p edge-sim --features sim -- $(SIM_SOAK_SEEDS) $(SIM_SOAK_FIRST)

## Benchmarks (not run in CI): medians of several runs, next to this machine's baselines.
bench:
	./scripts/bench-store.sh
	./scripts/bench-daemon.sh
	$(CARGO) bench -p relay --bench relay
	$(CARGO) bench -p net --bench hop

## edged beside rsync over ssh, Syncthing and NNCP on the same scenarios, one machine, one run
## (not run in CI): installs the peers when missing, builds edged unless EDGED names a binary,
## prints one table; raw figures and logs in target/bench-peers/. Settings:
## scripts/bench-peers/bench.py (RUNS, SCENARIOS, PEERS, BENCH_PEERS_QUICK=1, ...).
bench-peers:
	./scripts/bench-peers/run.sh

clean:
	$(CARGO) clean

## Store-to-file latency of local delivery (median, p95), release build: prints DELIVERY_LATENCY_MS.
bench-deliver:
	$(CARGO) test --release -p edged --test deliver -- --ignored --nocapture measure_store_to_file_latency
