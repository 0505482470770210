#!/usr/bin/env bash
# Runs the whole xnat test suite: formatting, lints, unit, property and lab tests.
# Lab tests create their own network namespaces (198.18.0.0/15 only) and remove them.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/deps.sh
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
RUST_TEST_THREADS=2 cargo test --locked --all-targets
# The model check of the table's concurrency protocol (loom: every interleaving of two
# threads up to 2 preemptions, on a 2x2 table); its own target directory, since the
# crate is built with --cfg loom there.
RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test --locked --release --test loom_table
# The NAT behaviour scenarios against xnat and nftables side by side; fails if xnat fails one.
/usr/bin/python3 bench/conformance.py --xnat target/debug/xnat --require-xnat-pass \
  --out target/conformance.md
scripts/check-deploy.sh
scripts/check-bench.sh
