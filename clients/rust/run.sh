#!/usr/bin/env bash
# The Rust client: progenitor generates it from openapi.yaml at build time (build.rs, into
# OUT_DIR: never committed) in this small crate of its own, so the product's build never pays
# for it; then the scenario runs against the live server clients/run.sh started.
set -euo pipefail
cd "$(dirname "$0")"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/../../target/clients/rust}
cargo run --locked --quiet
