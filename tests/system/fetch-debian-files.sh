#!/usr/bin/env bash
# fetch-debian-files.sh ARCH NAME PACKAGE... -- FILE...
#
# Files from Debian's packages for ARCH, with every shared library they need, for a BusyBox
# appliance that has none: downloads PACKAGEs from the machine's own apt sources, extracts
# them, and copies each FILE (a guest path, e.g. /usr/sbin/watchdog or
# /lib/aarch64-linux-gnu/libsystemd.so.0) with the closure of its ELF NEEDED entries and
# the program interpreter of each executable, at the paths the loader looks for them. Every
# package that holds a needed library must be among PACKAGEs. Cached, so a second run
# needs no network:
#   ${WK_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/watchkeeper}/ARCH-NAME/
#     debs/       the .deb files
#     root/       the files, at their guest paths
#     manifest    the lines this script prints
#
# Output on stdout (shell-safe KEY=VALUE lines): WK_ROOT, WK_FILES (guest paths under
# WK_ROOT), and WK_VERSION_<package, with - and . as _>=VERSION for each package.
set -euo pipefail
usage() { echo "usage: $0 arm64|armhf NAME PACKAGE... -- FILE..." >&2; exit 2; }
[ $# -ge 4 ] || usage
ARCH=$1 NAME=$2
shift 2
case $ARCH in
    arm64) LIBDIRS="/lib/aarch64-linux-gnu /usr/lib/aarch64-linux-gnu" ;;
    armhf) LIBDIRS="/lib/arm-linux-gnueabihf /usr/lib/arm-linux-gnueabihf" ;;
    *) usage ;;
esac
packages=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do packages+=("$1"); shift; done
[ $# -gt 1 ] || usage
shift
wanted=("$@")
CACHE=${WK_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/watchkeeper}/$ARCH-$NAME
log() { echo "fetch-debian-files[$ARCH-$NAME]: $*" >&2; }
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
(cd "$CACHE/debs" && apt-get download -qq "${sandbox[@]}" "${packages[@]/%/:$ARCH}" >&2)

WORK=$(mktemp -d "$CACHE/extract.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
for deb in "$CACHE"/debs/*.deb; do dpkg-deb -x "$deb" "$WORK/x"; done

rm -rf "$CACHE/root"
files=()
place() { # GUEST_PATH: the file's bytes (symlinks resolved) at its guest path, once
    local f
    for f in "${files[@]}"; do [ "$f" = "$1" ] && return 0; done
    [ -e "$WORK/x$1" ] || { log "$1 is in none of the packages: ${packages[*]}"; exit 1; }
    mkdir -p "$CACHE/root$(dirname "$1")"
    cp -L "$WORK/x$1" "$CACHE/root$1"
    files+=("$1")
}
# A library by its NEEDED name, where the loader looks (the first library directory that
# holds it in the packages).
library() {
    local dir
    for dir in $LIBDIRS; do
        [ -e "$WORK/x$dir/$1" ] && { echo "$dir/$1"; return 0; }
    done
    log "needed library $1 is in none of the packages: ${packages[*]}"
    exit 1
}
queue=("${wanted[@]}")
while [ ${#queue[@]} -gt 0 ]; do
    path=${queue[0]}
    queue=("${queue[@]:1}")
    case " ${files[*]} " in *" $path "*) continue ;; esac
    place "$path"
    interp=$(readelf -l "$WORK/x$path" 2>/dev/null | sed -n 's/.*Requesting program interpreter: \(.*\)]/\1/p')
    [ -n "$interp" ] && queue+=("$interp")
    for lib in $(readelf -d "$WORK/x$path" 2>/dev/null | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
        # the interpreter is needed by its own name in some libraries (libc.so.6 names
        # ld-linux-*.so.*): it is placed at its path above
        case $lib in ld-linux*) continue ;; esac
        queue+=("$(library "$lib")")
    done
done

{
    echo "WK_ROOT='$CACHE/root'"
    echo "WK_FILES='${files[*]}'"
    for deb in "$CACHE"/debs/*.deb; do
        package=$(dpkg-deb -f "$deb" Package)
        echo "WK_VERSION_${package//[-.+]/_}='$(dpkg-deb -f "$deb" Version)'"
    done
} >"$CACHE/manifest.new"
mv "$CACHE/manifest.new" "$CACHE/manifest"
cat "$CACHE/manifest"
