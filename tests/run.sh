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
# The inbox's browser test: Debian's chromium and its WebDriver.
command -v chromium >/dev/null 2>&1 || need_debs+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need_debs+=(chromium-driver)
command -v python3 >/dev/null 2>&1 || need_debs+=(python3)
# tests/image-runtime.sh: readiness probes and dropping to the image's user.
command -v curl >/dev/null 2>&1 || need_debs+=(curl)
command -v setpriv >/dev/null 2>&1 || need_debs+=(util-linux)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need_debs+=(python3-venv)
if [ ${#need_debs[@]} -gt 0 ]; then
  echo "tests/run.sh: installing Debian packages: ${need_debs[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_debs[@]}"
fi

if ! command -v tansu >/dev/null 2>&1; then
  echo "tests/run.sh: installing tansu, the Kafka-compatible broker for end-to-end tests (about 15 minutes on 2 cores)"
  cargo install tansu --locked --features dynostore
fi

# Gates: formatting, lints, and the engine's purity (outside its test
# modules, src/engine/ uses nothing from the crate outside engine/ and no
# clock, async runtime, Kafka client or filesystem).
cargo fmt --check
cargo clippy --locked --all-targets -- -D warnings
engine_leaks=$(
  for f in src/engine/*.rs; do
    [ "$(basename "$f")" = tests.rs ] && continue
    awk '/^#\[cfg\(test\)\]/ { exit } { print FILENAME ":" FNR ": " $0 }' "$f"
  done | grep -E 'crate::|Utc::now|Local::now|SystemTime|Instant|tokio|rdkafka|std::fs|std::net|File::' \
       | grep -vE 'crate::engine(::|;)' || true
)
if [ -n "$engine_leaks" ]; then
  echo "tests/run.sh: src/engine/ must stay pure; found:" >&2
  echo "$engine_leaks" >&2
  exit 1
fi

cargo test --all-targets --locked
bash tests/deploy.sh
# Performance regression guard by ratio (engine vs parse-only), not by time.
cargo bench --locked --bench replay -- --quick
