# edged — build, test and measure.
CARGO ?= cargo

.PHONY: build test lint bench demo clean

build:
	$(CARGO) build --release --workspace

## The main job: a local 4-node fleet seeded from a directory (see scripts/demo.sh).
demo:
	$(CARGO) build --release --locked -p edged
	./scripts/demo.sh

## The test command (CI runs exactly this): unit, model, crash and integration tests.
test:
	$(CARGO) test --workspace --locked

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

## Benchmarks (not run in CI): medians of several runs, next to this machine's baselines.
bench:
	./scripts/bench-store.sh
	./scripts/bench-daemon.sh
	$(CARGO) bench -p relay --bench relay
	$(CARGO) bench -p net --bench hop

clean:
	$(CARGO) clean
