#!/usr/bin/env bash
# Runs every check and test logferry has, on a fresh machine too: installs what is missing
# (Debian's logrotate for the rotation tests), then formatting, lints and the test suites.
# The integration tests start the real binary and the real tools themselves.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

need_logrotate() {
    if command -v logrotate >/dev/null 2>&1 || [ -x /usr/sbin/logrotate ]; then
        return
    fi
    echo "== installing logrotate (Debian)"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq logrotate >/dev/null
}

need_logrotate

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo test"
cargo test --workspace
