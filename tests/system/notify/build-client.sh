#!/usr/bin/env bash
# build-client.sh OUT_DIR
#
# The sd-notify scenario's daemons for arm64, with the libraries they need
# (tests/system/fetch-debian-files.sh): sd-client.c linked against Debian's libsystemd0
# with the cross compiler of board/host-setup.sh, and Debian's tor with its torrc and init
# script. Prints, as shell-safe KEY=VALUE lines, WK_ROOT and WK_FILES (the guest paths of
# the files under WK_ROOT) and the libsystemd0 and tor versions.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
[ $# -eq 1 ] || { echo "usage: $0 OUT_DIR" >&2; exit 2; }
OUT=$1
eval "$("$HERE/../fetch-debian-files.sh" arm64 libsystemd libsystemd0 libc6 libcap2 libgcrypt20 \
    libgpg-error0 liblz4-1 liblzma5 libzstd1 -- /usr/lib/aarch64-linux-gnu/libsystemd.so.0 /lib/ld-linux-aarch64.so.1)"
files=$WK_FILES
rm -rf "$OUT/root"
mkdir -p "$OUT/root/usr/bin" "$OUT/root/etc/tor" "$OUT/root/etc/init.d"
cp -a "$WK_ROOT/." "$OUT/root/"
aarch64-linux-gnu-gcc -O2 -Wall -Wextra -Werror -o "$OUT/root/usr/bin/sd-client" "$HERE/sd-client.c" \
    "$WK_ROOT/usr/lib/aarch64-linux-gnu/libsystemd.so.0" \
    -Wl,-rpath-link,"$WK_ROOT/lib/aarch64-linux-gnu:$WK_ROOT/usr/lib/aarch64-linux-gnu" \
    -Wl,--dynamic-linker=/lib/ld-linux-aarch64.so.1
libsystemd=$WK_VERSION_libsystemd0
eval "$("$HERE/../fetch-debian-files.sh" arm64 tor tor libc6 libcap2 libevent-2.1-7 liblzma5 libssl3 \
    libsystemd0 libzstd1 zlib1g libgcrypt20 libgpg-error0 liblz4-1 -- /usr/bin/tor /lib/ld-linux-aarch64.so.1)"
cp -a "$WK_ROOT/." "$OUT/root/"
cp "$HERE/torrc" "$OUT/root/etc/tor/torrc"
cp "$HERE/tor.init" "$OUT/root/etc/init.d/tor"
# both closures hold libc and libsystemd: each guest path once
files=$(printf '%s\n' /usr/bin/sd-client /etc/tor/torrc /etc/init.d/tor $files $WK_FILES | sort -u | tr '\n' ' ')
echo "WK_ROOT='$OUT/root'"
echo "WK_FILES='$files'"
echo "WK_LIBSYSTEMD_VERSION='$libsystemd'"
echo "WK_TOR_VERSION='$WK_VERSION_tor'"
