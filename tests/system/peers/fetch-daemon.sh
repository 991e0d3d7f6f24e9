#!/usr/bin/env bash
# fetch-daemon.sh ARCH
#
# Gets Debian's Linux watchdog daemon (package `watchdog`) for ARCH with the shared libraries
# it needs, from the machine's own apt sources, for the peer benchmark (tests/bench-peers).
# The .deb files and the extracted files are cached, so a second run needs no network:
#   ${WK_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/watchkeeper/ARCH-peers}/
#     debs/                      watchdog_*.deb, libc6_*.deb
#     root/usr/sbin/watchdog     the daemon
#     root/<libs>                each library the daemon needs (its ELF NEEDED entries and
#                                program interpreter), at the path the loader looks for it
#     manifest                   the KEY=VALUE lines this script prints
#
# Output on stdout (shell-safe KEY=VALUE lines):
#   WK_DAEMON_VERSION WK_LIBC_VERSION WK_DAEMON_ROOT WK_DAEMON_FILES (guest paths under root/)
set -euo pipefail
usage() { echo "usage: $0 arm64|armhf" >&2; exit 2; }
[ $# -eq 1 ] || usage
ARCH=$1
case $ARCH in
    arm64) LIBDIR=/lib/aarch64-linux-gnu ;;
    armhf) LIBDIR=/lib/arm-linux-gnueabihf ;;
    *) usage ;;
esac
CACHE=${WK_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/watchkeeper/$ARCH-peers}
log() { echo "fetch-daemon[$ARCH]: $*" >&2; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

if [ -f "$CACHE/manifest" ]; then
    cat "$CACHE/manifest"
    exit 0
fi
mkdir -p "$CACHE/debs"
# the foreign architecture is added by fetch-kernel.sh, which runs first; check anyway
if ! dpkg --print-foreign-architectures | grep -qx "$ARCH" && [ "$(dpkg --print-architecture)" != "$ARCH" ]; then
    as_root dpkg --add-architecture "$ARCH"
    as_root apt-get update -qq >&2 || log "apt-get update reported errors (continuing)"
fi
sandbox=()
[ "$(id -u)" -eq 0 ] && sandbox=(-o APT::Sandbox::User=root)
rm -f "$CACHE"/debs/*.deb
(cd "$CACHE/debs" && apt-get download -qq "${sandbox[@]}" "watchdog:$ARCH" "libc6:$ARCH" >&2)

WORK=$(mktemp -d "$CACHE/extract.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
for deb in "$CACHE"/debs/*.deb; do dpkg-deb -x "$deb" "$WORK/x"; done

rm -rf "$CACHE/root"
mkdir -p "$CACHE/root/usr/sbin"
cp "$WORK/x/usr/sbin/watchdog" "$CACHE/root/usr/sbin/watchdog"
files=(/usr/sbin/watchdog)
interp=$(readelf -l "$WORK/x/usr/sbin/watchdog" | sed -n 's/.*Requesting program interpreter: \(.*\)]/\1/p')
[ -n "$interp" ] || { log "the daemon has no program interpreter: not a dynamic binary?"; exit 1; }
place() { # GUEST_PATH SOURCE: the library's bytes (symlinks resolved) at the guest path
    mkdir -p "$CACHE/root$(dirname "$1")"
    cp -L "$2" "$CACHE/root$1"
    files+=("$1")
}
place "$interp" "$WORK/x$interp"
for lib in $(readelf -d "$WORK/x/usr/sbin/watchdog" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
    [ "$LIBDIR/$lib" = "$interp" ] && continue
    [ "/lib/$lib" = "$interp" ] && continue
    src=$WORK/x$LIBDIR/$lib
    [ -e "$src" ] || { log "needed library $lib not found in the downloaded packages"; exit 1; }
    place "$LIBDIR/$lib" "$src"
done

{
    echo "WK_DAEMON_VERSION='$(dpkg-deb -f "$CACHE"/debs/watchdog_*.deb Version)'"
    echo "WK_LIBC_VERSION='$(dpkg-deb -f "$CACHE"/debs/libc6_*.deb Version)'"
    echo "WK_DAEMON_ROOT='$CACHE/root'"
    echo "WK_DAEMON_FILES='${files[*]}'"
} >"$CACHE/manifest.new"
mv "$CACHE/manifest.new" "$CACHE/manifest"
cat "$CACHE/manifest"
