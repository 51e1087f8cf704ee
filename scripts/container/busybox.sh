#!/usr/bin/env bash
# A small image with Debian's busybox-static (/bin/busybox and its applets as symlinks, /bin/sh
# among them), for the stand-in platform container that writes logs in the sidecar pod test.
#   scripts/container/busybox.sh      -> prints the image name as its last line
# Needs the busybox-static package; uses podman as configured by scripts/container/env.sh.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=env.sh
. "$here/env.sh"
image=${LOGFERRY_BUSYBOX_IMAGE:-localhost/logferry-busybox:latest}
bin=/bin/busybox
[ -x "$bin" ] || { echo "busybox.sh: $bin missing: apt-get install busybox-static" >&2; exit 1; }
# busybox-static is one static binary: its version and hash name the image content.
hash=$(sha256sum "$bin" | cut -c1-12)
current=$(podman image inspect --format '{{index .Labels "org.logferry.busybox"}}' "$image" 2>/dev/null || true)
if [ "$current" != "$hash" ]; then
    root=$(mktemp -d)
    trap 'rm -rf "$root"' EXIT
    mkdir -p "$root/bin" "$root/tmp" "$root/etc"
    chmod 1777 "$root/tmp"
    cp "$bin" "$root/bin/busybox"
    "$bin" --list | while IFS= read -r applet; do
        [ "$applet" = busybox ] || ln -s busybox "$root/bin/$applet"
    done
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' > "$root/etc/passwd"
    printf 'root:x:0:\nnobody:x:65534:\n' > "$root/etc/group"
    old=$(podman image inspect --format '{{.Id}}' "$image" 2>/dev/null || true)
    tar --numeric-owner --sort=name --mtime=@0 -C "$root" -cf - . \
        | podman import --quiet --change 'ENV PATH=/bin' --change 'CMD ["/bin/sh"]' \
            --change "LABEL org.logferry.busybox=$hash" - "$image" >&2
    if [ -n "$old" ]; then podman rmi "$old" >/dev/null 2>&1 || true; fi
fi
echo "$image"
