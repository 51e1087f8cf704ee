#!/usr/bin/env bash
# Builds logferry's runtime base image from Debian 12 packages, the equivalent of
# gcr.io/distroless/cc-debian12:nonroot for a registry-less host: glibc (libc6), libgcc-s1, the
# CA bundle, tzdata, netbase, base-files; /etc/passwd and /etc/group with root, nobody and nonroot
# (65532, home /home/nonroot). No shell, no package manager, no docs; what scanners need is kept:
# /var/lib/dpkg/status.d/<package> (distroless' layout: the control fields of each package whose
# files are in the image) and each package's copyright file.
#
#   scripts/container/base.sh [CACHE_DIR]     (default: target/container)
#
# Packages come from bookworm, bookworm-updates and bookworm-security (the CA bundle and tzdata
# change between point releases). The root file system is a tarball in CACHE_DIR/base/, named
# after this script's hash, with its SHA-256 beside it: it is built again when the script changes,
# when it is older than MAX_AGE_DAYS (default 7: security updates), or when it does not match its
# digest (a cut download or a disk error); otherwise it (and the imported image) are reused. Needs
# root, mmdebstrap and Debian mirrors (MIRROR, default http://deb.debian.org/debian;
# SECURITY_MIRROR, default http://deb.debian.org/debian-security). Prints the image name as its
# last line. Uses podman as configured by scripts/container/env.sh.
set -euo pipefail
if [ "${1:-}" = "--help" ]; then sed -n '2,21p' "$0"; exit 0; fi

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${1:-$here/../../target/container}
mkdir -p "$cache/base"
cache=$(cd "$cache" && pwd)
# shellcheck source-path=SCRIPTDIR source=env.sh
. "$here/env.sh"

image=${LOGFERRY_BASE_IMAGE:-localhost/logferry-base:debian12}
suite=bookworm
mirror=${MIRROR:-http://deb.debian.org/debian}
security=${SECURITY_MIRROR:-http://deb.debian.org/debian-security}
max_age=${MAX_AGE_DAYS:-7}
# Package versions are whatever the mirror has; a fixed date keeps file times (and so the layer
# digest for the same packages) reproducible.
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-1704067200}
hash=$(sha256sum < "$here/base.sh" | cut -c1-12)
tarball=$cache/base/debian12-$hash.tar


# A tarball is trusted only whole (its digest) and fresh (security updates).
if [ -e "$tarball" ]; then
    if ! (cd "$cache/base" && sha256sum --status -c "$(basename "$tarball").sha256" 2>/dev/null); then
        echo "base.sh: $tarball does not match its digest: building it again" >&2
        rm -f "$tarball" "$tarball.sha256"
    elif [ $(( $(date +%s) - $(stat -c %Y "$tarball") )) -gt $(( max_age * 86400 )) ]; then
        echo "base.sh: $tarball is older than $max_age days: building it again for security updates" >&2
        # Kept until the new one is whole: an unreachable mirror must not leave no base at all.
        mv -f "$tarball" "$tarball.old"
        mv -f "$tarball.sha256" "$tarball.old.sha256"
    fi
fi

if [ ! -s "$tarball" ]; then
    # Packages whose files are kept; the rest of what they pull in (debconf, mawk, openssl,
    # libssl3, gcc-12-base and ca-certificates itself once its bundle is made) is removed.
    keep="base-files libc6 libgcc-s1 netbase tzdata"
    hook=$(mktemp)
    trap 'rm -f "$hook" "$tarball.part"' EXIT
    cat > "$hook" <<'HOOK'
#!/bin/sh
# mmdebstrap --extract-hook: $1 is the unpacked root; the .debs are still in its apt cache.
set -eu
root=${1:?}
keep=${2:?}
# Never the host's root: only a tree mmdebstrap just unpacked.
case $root in /|"") exit 1 ;; esac
[ -d "$root/var/cache/apt/archives" ] || exit 1
debs=$root/var/cache/apt/archives
# For scanners and licences: the control fields and the copyright of every package whose files
# stay (ca-certificates: its bundle; gcc-12-base: libgcc-s1's copyright), set aside before the
# package manager's state and the docs go.
mkdir -p "$root/.keep/status.d" "$root/.keep/doc"
for deb in "$debs"/*.deb; do
    pkg=$(dpkg-deb --field "$deb" Package)
    case " $keep ca-certificates gcc-12-base " in *" $pkg "*) ;; *) continue ;; esac
    { dpkg-deb --field "$deb"; echo "Status: install ok installed"; } > "$root/.keep/status.d/$pkg"
    dpkg-deb --fsys-tarfile "$deb" | tar -xO "./usr/share/doc/$pkg/copyright" \
        > "$root/.keep/doc/$pkg.copyright" 2>/dev/null || rm -f "$root/.keep/doc/$pkg.copyright"
done
# The bundle ca-certificates' postinst (update-ca-certificates) would make.
mkdir -p "$root/etc/ssl/certs"
cat "$root"/usr/share/ca-certificates/mozilla/*.crt > "$root/etc/ssl/certs/ca-certificates.crt"
for deb in "$debs"/*.deb; do
    pkg=$(dpkg-deb --field "$deb" Package)
    case " $keep " in *" $pkg "*) continue ;; esac
    dpkg-deb --fsys-tarfile "$deb" | tar -t | while IFS= read -r path; do
        p=$root/${path#./}
        if [ -L "$p" ] || [ -f "$p" ]; then rm -f "$p"; fi
    done
    # Directories only these packages had, deepest first.
    dpkg-deb --fsys-tarfile "$deb" | tar -t | grep '/$' | sort -r | while IFS= read -r path; do
        rmdir "$root/${path#./}" 2>/dev/null || true
    done
done
# glibc's programs (ldd is a bash script; ldconfig, iconv, locale, ...), its iconv modules,
# the package manager's state and everything documentary.
rm -rf "${root:?}"/usr/bin/* "${root:?}"/usr/sbin/* "${root:?}"/sbin/* "${root:?}"/bin/* \
    "$root"/usr/lib/x86_64-linux-gnu/gconv "$root"/usr/libexec \
    "$root"/var/lib/dpkg "$root"/var/lib/apt "$root"/var/cache/apt "$root"/var/cache/debconf \
    "$root"/var/log/* "$root"/etc/apt "$root"/etc/dpkg "$root"/etc/debconf.conf \
    "$root"/usr/share/doc "$root"/usr/share/man "$root"/usr/share/info \
    "$root"/usr/share/locale "$root"/usr/share/lintian "$root"/usr/share/bug \
    "$root"/usr/share/zoneinfo/right "$root"/usr/share/zoneinfo/posix \
    "$root"/etc/profile* "$root"/etc/skel "$root"/root/.bashrc "$root"/root/.profile \
    "$root"/etc/update-motd.d "$root"/etc/default "$root"/etc/cron.daily \
    "$root"/usr/share/base-files/dot.* "$root"/usr/share/base-files/motd \
    "$root"/usr/share/base-files/info.dir "$root"/usr/share/base-files/profile* \
    "$root"/tmp/mmdebstrap.* "$root"/etc/resolv.conf "$root"/etc/hostname
# distroless' users and groups.
cat > "$root/etc/passwd" <<EOF
root:x:0:0:root:/root:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
EOF
cat > "$root/etc/group" <<EOF
root:x:0:
nobody:x:65534:
tty:x:5:
staff:x:50:
nonroot:x:65532:
EOF
# What libc-bin's postinst writes (glibc's own default puts dns before files).
cat > "$root/etc/nsswitch.conf" <<EOF
passwd:         files
group:          files
shadow:         files
hosts:          files dns
networks:       files
protocols:      files
services:       files
EOF
mkdir -p "$root/var/lib/dpkg" "$root/usr/share/doc"
mv "$root/.keep/status.d" "$root/var/lib/dpkg/status.d"
for c in "$root"/.keep/doc/*.copyright; do
    pkg=$(basename "$c" .copyright)
    mkdir -p "$root/usr/share/doc/$pkg"
    mv "$c" "$root/usr/share/doc/$pkg/copyright"
done
rm -rf "${root:?}/.keep"
# The loader and libc must be there: a tree without them would be imported and fail at start.
[ -e "$root/lib64/ld-linux-x86-64.so.2" ] && [ -e "$root/lib/x86_64-linux-gnu/libc.so.6" ] || exit 1
mkdir -p "$root/home/nonroot" "$root/tmp" "$root/dev"
chown 65532:65532 "$root/home/nonroot"
chmod 0700 "$root/home/nonroot"
chmod 1777 "$root/tmp"
ln -sf /usr/share/zoneinfo/Etc/UTC "$root/etc/localtime"
echo Etc/UTC > "$root/etc/timezone"
HOOK
    chmod +x "$hook"
    start=$(date +%s)
    # --variant=extract: packages are unpacked, no maintainer script runs (nothing to run them
    # with). Their dependencies come along and the hook removes them. The tarball has no /dev
    # entries: the runtime mounts /dev. The hook does mmdebstrap's cleanup (apt lists and cache,
    # its apt and dpkg config) with the rest: it removes /etc/apt and /etc/dpkg altogether.
    if ! mmdebstrap --quiet --variant=extract --mode=root --format=tar \
        --include="${keep// /,},ca-certificates" \
        --dpkgopt='path-exclude=/usr/share/doc/*' \
        --dpkgopt='path-exclude=/usr/share/man/*' \
        --dpkgopt='path-exclude=/usr/share/locale/*' \
        --extract-hook="$hook \"\$1\" \"$keep\"" \
        --skip=output/dev --skip=cleanup/apt --skip=cleanup/mmdebstrap \
        "$suite" "$tarball.part" \
        "deb $mirror $suite main" "deb $mirror $suite-updates main" \
        "deb $security $suite-security main" >&2; then
        if [ -e "$tarball.old" ]; then
            echo "base.sh: WARNING: the base could not be refreshed (mirror unreachable?); using the one from $(date -r "$tarball.old" +%F), without the security updates since" >&2
            mv -f "$tarball.old" "$tarball"
            mv -f "$tarball.old.sha256" "$tarball.sha256"
            rm -f "$tarball.part"
            # Tried again at the next build a day later, not at every build.
            touch -d "$(( max_age > 0 ? max_age - 1 : 0 )) days ago" "$tarball"
        else
            exit 1
        fi
    else
        mv "$tarball.part" "$tarball"
        rm -f "$tarball.old" "$tarball.old.sha256"
        echo "base.sh: built $tarball ($(du -h "$tarball" | cut -f1)) in $(( $(date +%s) - start ))s" >&2
    fi
    [ -e "$tarball.sha256" ] || (cd "$cache/base" && sha256sum "$(basename "$tarball")" > "$(basename "$tarball").sha256")
    rm -f "$hook"
    trap - EXIT
    # Older tarballs of earlier versions of this script.
    find "$cache/base" -name 'debian12-*.tar*' ! -name "debian12-$hash.tar*" -delete
fi
# The tarball's own digest names the image content: a rebuilt (fresher) tarball is imported again.
digest=$(cut -c1-12 "$tarball.sha256")
versions=$(tar -xOf "$tarball" --wildcards './var/lib/dpkg/status.d/*' \
    | awk '/^Package:/ {p=$2} /^Version:/ {printf "%s%s=%s", sep, p, $2; sep=","}')

# The image carries the tarball's hash as a label: a new tarball replaces it. PATH, USER,
# WORKDIR and SSL_CERT_FILE as in distroless' nonroot images.
current=$(podman image inspect --format '{{index .Labels "org.logferry.base"}}' "$image" 2>/dev/null || true)
if [ "$current" != "$digest" ]; then
    old=$(podman image inspect --format '{{.Id}}' "$image" 2>/dev/null || true)
    podman import --quiet \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
        --change 'USER 65532:65532' \
        --change 'WORKDIR /home/nonroot' \
        --change "LABEL org.logferry.base=$digest" \
        --change "LABEL org.logferry.base.packages=$versions" \
        --message "logferry base: Debian 12 $suite libc6 libgcc-s1 ca-certificates tzdata netbase" \
        "$tarball" "$image" >&2
    # The previous one, unless a container or image still uses it.
    if [ -n "$old" ]; then podman rmi "$old" >/dev/null 2>&1 || true; fi
fi
echo "$image"
