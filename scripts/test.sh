#!/usr/bin/env bash
# Runs the whole xnat test suite: formatting, lints, unit, property and lab tests.
# Lab tests create their own network namespaces (198.18.0.0/15 only) and remove them.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/deps.sh
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
RUST_TEST_THREADS=2 cargo test --locked --all-targets
scripts/check-deploy.sh
scripts/check-bench.sh
