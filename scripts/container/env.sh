# shellcheck shell=bash
# Source this (bash): podman 4.3 configured for logferry's container tests, with its own storage
# under target/container/ (or $LOGFERRY_CONTAINER_DIR), apart from the host's /var/lib/containers.
#   . scripts/container/env.sh && podman images
# Sets CONTAINERS_CONF and CONTAINERS_STORAGE_CONF (files it writes into that directory from
# scripts/container/containers.conf); every podman command reads them, so a test only has to
# pass the two variables on.
_lf_repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
LOGFERRY_CONTAINER_DIR=${LOGFERRY_CONTAINER_DIR:-$_lf_repo/target/container}
mkdir -p "$LOGFERRY_CONTAINER_DIR"
LOGFERRY_CONTAINER_DIR=$(cd "$LOGFERRY_CONTAINER_DIR" && pwd)
export LOGFERRY_CONTAINER_DIR
export CONTAINERS_CONF="$LOGFERRY_CONTAINER_DIR/containers.conf"
export CONTAINERS_STORAGE_CONF="$LOGFERRY_CONTAINER_DIR/storage.conf"
# runroot and libpod's tmp_dir hold run-time state (conmon sockets, exit files, the "alive"
# marker that tells podman the host rebooted): on /run, so a reboot clears them, one per storage
# root so two checkouts (or the host's own podman, /run/libpod) never share them.
_lf_run="/run/logferry-podman/$(printf '%s' "$LOGFERRY_CONTAINER_DIR" | sha256sum | cut -c1-12)"
cat > "$CONTAINERS_STORAGE_CONF.tmp" <<CONF
# Written by scripts/container/env.sh.
[storage]
driver = "overlay"
graphroot = "$LOGFERRY_CONTAINER_DIR/storage"
runroot = "$_lf_run/storage"
CONF
# CONTAINERS_CONF names one file (podman 4.3 reads no drop-ins then): the checked-in settings
# plus this store's tmp_dir.
sed "/^\[engine\]/a tmp_dir = \"$_lf_run/libpod\"" "$_lf_repo/scripts/container/containers.conf" \
    > "$CONTAINERS_CONF.tmp"
for _lf_f in "$CONTAINERS_STORAGE_CONF" "$CONTAINERS_CONF"; do
    if cmp -s "$_lf_f.tmp" "$_lf_f"; then rm -f "$_lf_f.tmp"; else mv -f "$_lf_f.tmp" "$_lf_f"; fi
done
unset _lf_repo _lf_run _lf_f
