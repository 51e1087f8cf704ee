#!/usr/bin/env bash
# Runs every check and test logferry has, on a fresh machine too: installs what is missing
# (Debian's logrotate for the rotation tests, moto's S3 server from PyPI), then formatting,
# lints and the test suites.
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

# moto's S3 server, in a virtual environment the tests find under target/test-tools.
need_moto() {
    local venv=target/test-tools/venv
    if [ -x "$venv/bin/moto_server" ]; then
        return
    fi
    echo "== installing moto[server] (PyPI)"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q 'moto[server]'
}

need_logrotate
need_moto

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo test"
cargo test --workspace
