#!/usr/bin/env bash
# Builds logferry's container image with podman (Debian 12's 4.3), without a Docker engine.
#
#   scripts/image.sh --binary target/release/logferry    # that binary, on the runtime base
#   scripts/image.sh                                      # compiled in the Dockerfile's build stage
#                                                         #   (pulls the Rust image: needs a registry)
# Options: --binary FILE, --tag NAME (default localhost/logferry:latest),
#          --runtime local|distroless (default local: scripts/container/base.sh builds the base
#          from Debian packages; distroless pulls gcr.io/distroless/cc-debian12:nonroot).
#
# Installs podman, runc, netavark, catatonit, mmdebstrap and busybox-static when missing (root,
# apt). Storage and settings as scripts/container/env.sh sets them (target/container/). Prints
# the image name as its last line. Run it again and it reuses what did not change.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

binary=""
tag=localhost/logferry:latest
runtime=local
while [ $# -gt 0 ]; do
    case $1 in
        --binary) binary=$2; shift 2 ;;
        --tag) tag=$2; shift 2 ;;
        --runtime) runtime=$2; shift 2 ;;
        -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
        *) echo "image.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done

if [ -n "$binary" ]; then
    if [ ! -f "$binary" ] || [ ! -x "$binary" ]; then
        echo "image.sh: $binary is not an executable" >&2
        exit 1
    fi
    binary=$(realpath "$binary")
fi
cd "$repo"

if [ "$(id -u)" != 0 ]; then
    echo "image.sh: needs root (rootful podman, mmdebstrap --mode=root)" >&2
    exit 1
fi

# Named one by one: a host with APT::Install-Recommends "false" would miss netavark (without it
# podman falls back to CNI) and catatonit (kube play's pause image is built from it).
packages="podman runc netavark aardvark-dns catatonit mmdebstrap busybox-static"
missing=""
for p in $packages; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "== installing$missing (apt)" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >&2
    # shellcheck disable=SC2086
    apt-get install -y -q $missing >&2
fi

# shellcheck source-path=SCRIPTDIR source=container/env.sh
. scripts/container/env.sh

# One build at a time per store: two would share the context folder and prune each other's
# images (a tag could end up on the other run's binary).
exec 9>"$LOGFERRY_CONTAINER_DIR/image.lock"
flock 9

case $runtime in
    local) runtime_image=$(scripts/container/base.sh "$LOGFERRY_CONTAINER_DIR" | tail -n 1) ;;
    distroless) runtime_image=gcr.io/distroless/cc-debian12:nonroot ;;
    *) echo "image.sh: --runtime local|distroless" >&2; exit 2 ;;
esac

# --format docker: the OCI format has no HEALTHCHECK (podman drops it with a warning).
# BINARY is always given: buildah 1.28 decides which stages to skip from --build-arg values
# only, not from ARG defaults, and would skip the stage `FROM ${BINARY}` names by default.
args=(--format docker --build-arg "RUNTIME=$runtime_image" -f "$repo/Dockerfile" -t "$tag")
if [ -n "$binary" ]; then
    # A context of one file: nothing else is sent, and the Dockerfile's prebuilt stage takes it.
    context=$LOGFERRY_CONTAINER_DIR/context
    mkdir -p "$context"
    find "$context" -mindepth 1 ! -name logferry -delete
    # Stripped, as the build stage does: symbols are most of a binary's size.
    strip -o "$context/logferry.new" "$binary"
    chmod 0755 "$context/logferry.new"
    if cmp -s "$context/logferry.new" "$context/logferry"; then
        rm -f "$context/logferry.new"
    else
        mv -f "$context/logferry.new" "$context/logferry"
    fi
    if [ "$runtime" = local ]; then args+=(--pull=never); fi
    podman build "${args[@]}" --build-arg BINARY=prebuilt "$context" >&2
else
    # Short names do not resolve without unqualified-search registries: name the registry.
    podman build "${args[@]}" --build-arg BINARY=build \
        --build-arg BUILDER=docker.io/library/rust:1.95.0-slim-bookworm "$repo" >&2
fi
# Earlier builds' images and the prebuilt stage's copy of the binary, now untagged.
podman image prune -f >/dev/null
echo "$tag"
