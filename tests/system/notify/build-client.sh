#!/usr/bin/env bash
# build-client.sh OUT_DIR
#
# The sd-notify scenario's client for arm64: Debian's libsystemd0 and the libraries it
# needs (tests/system/fetch-debian-files.sh), and sd-client.c linked against it with the
# cross compiler of board/host-setup.sh. Prints, as shell-safe KEY=VALUE lines, WK_ROOT and
# WK_FILES (the guest paths of the client and its libraries under WK_ROOT) and the
# libsystemd0 version.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
[ $# -eq 1 ] || { echo "usage: $0 OUT_DIR" >&2; exit 2; }
OUT=$1
eval "$("$HERE/../fetch-debian-files.sh" arm64 libsystemd libsystemd0 libc6 libcap2 libgcrypt20 \
    libgpg-error0 liblz4-1 liblzma5 libzstd1 -- /usr/lib/aarch64-linux-gnu/libsystemd.so.0 /lib/ld-linux-aarch64.so.1)"
mkdir -p "$OUT/root/usr/bin"
cp -a "$WK_ROOT/." "$OUT/root/"
aarch64-linux-gnu-gcc -O2 -Wall -Wextra -Werror -o "$OUT/root/usr/bin/sd-client" "$HERE/sd-client.c" \
    "$WK_ROOT/usr/lib/aarch64-linux-gnu/libsystemd.so.0" \
    -Wl,-rpath-link,"$WK_ROOT/lib/aarch64-linux-gnu:$WK_ROOT/usr/lib/aarch64-linux-gnu" \
    -Wl,--dynamic-linker=/lib/ld-linux-aarch64.so.1
echo "WK_ROOT='$OUT/root'"
echo "WK_FILES='/usr/bin/sd-client $WK_FILES'"
echo "WK_LIBSYSTEMD_VERSION='$WK_VERSION_libsystemd0'"
