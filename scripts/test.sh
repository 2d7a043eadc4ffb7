#!/usr/bin/env bash
# The whole test suite: formatting, lints, Rust unit and end-to-end tests (real server
# and agents on 127.0.0.1), then the official Python SDKs against a real server.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo build --workspace --all-targets
cargo test --workspace
scripts/test-sdk.sh
