#!/usr/bin/env bash
# The test command. Sets up what the tests need on a fresh machine (skipping
# whatever is already there), then runs every test. `.ci/run` calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

need_debs=()
command -v promtool >/dev/null 2>&1 || need_debs+=(prometheus)
command -v pkg-config >/dev/null 2>&1 || need_debs+=(pkg-config)
dpkg -s libssl-dev >/dev/null 2>&1 || need_debs+=(libssl-dev)
command -v make >/dev/null 2>&1 || need_debs+=(make)
if [ ${#need_debs[@]} -gt 0 ]; then
  echo "tests/run.sh: installing Debian packages: ${need_debs[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_debs[@]}"
fi

if ! command -v tansu >/dev/null 2>&1; then
  echo "tests/run.sh: installing tansu, the Kafka-compatible broker for end-to-end tests (about 15 minutes on 2 cores)"
  cargo install tansu --locked --features dynostore
fi

cargo test --all-targets --locked
# Performance regression guard by ratio (engine vs parse-only), not by time.
cargo bench --locked --bench replay -- --quick
