#!/usr/bin/env bash
# The whole test suite: formatting, lints, Rust unit and end-to-end tests (real server
# and agents on 127.0.0.1), the official Python SDKs against a real server, then a short
# fuzzing pass over the parsers (scripts/fuzz.sh: 10 s per target).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
cargo fmt --manifest-path fuzz/Cargo.toml -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo build --workspace --all-targets
cargo test --workspace
scripts/test-sdk.sh
scripts/fuzz.sh 10
