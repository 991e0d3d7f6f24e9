#!/usr/bin/env bash
# build-appliance.sh BOARD OUT.cpio.gz [--binary FILE] [--config FILE] [--configs DIR]
#
# The watchkeeper appliance's initramfs for BOARD (aarch64 | armv7): build-initramfs.sh
# plus the agent and everything around it:
#   /usr/sbin/watchkeeper            --binary (default: target/<triple>/release/watchkeeper)
#   /etc/watchkeeper.toml            --config (default: board/qemu-BOARD-virt/demo.toml)
#   /etc/wk/configs/NAME.toml        every *.toml of --configs DIR (chosen with wk.config=NAME)
#   /usr/sbin/{sensord,uplink}       the sample components (appliance/component)
#   /etc/init.d/{sensord,uplink}     their init scripts, which the repairs call
#   /etc/default/{sensord,uplink}    their settings (startup delay, beat interval)
#   /etc/wk/autostart.d/50-watchkeeper   starts the components, then `watchkeeper run`
#   /etc/wk/shutdown.d/50-watchkeeper    `watchkeeper shutdown` at a reboot or power-off
# Does not build the binary (cargo build --release --target ... does).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
usage() { sed -n '2,14p' "${BASH_SOURCE[0]}" >&2; exit 2; }
[ $# -ge 2 ] || usage
BOARD=$1 OUT=$2; shift 2
case $BOARD in
    aarch64) ARCH=arm64 TRIPLE=aarch64-unknown-linux-musl ;;
    armv7) ARCH=armhf TRIPLE=armv7-unknown-linux-gnueabihf ;;
    *) usage ;;
esac
BINARY=$REPO/target/$TRIPLE/release/watchkeeper
CONFIG=$REPO/board/qemu-$BOARD-virt/demo.toml
CONFIGS=
while [ $# -gt 0 ]; do
    case $1 in
        --binary) BINARY=$2; shift 2 ;;
        --config) CONFIG=$2; shift 2 ;;
        --configs) CONFIGS=$2; shift 2 ;;
        *) usage ;;
    esac
done
[ -x "$BINARY" ] || { echo "build-appliance: no watchkeeper binary at $BINARY (cargo build --release --target $TRIPLE)" >&2; exit 1; }
[ -f "$CONFIG" ] || { echo "build-appliance: no config $CONFIG" >&2; exit 1; }

A=$HERE/appliance
adds=(
    --add "$BINARY:/usr/sbin/watchkeeper"
    --add "$CONFIG:/etc/watchkeeper.toml"
    --add "$A/50-watchkeeper:/etc/wk/autostart.d/50-watchkeeper"
    --add "$A/50-watchkeeper-shutdown:/etc/wk/shutdown.d/50-watchkeeper"
)
for c in sensord uplink; do
    adds+=(--add "$A/component:/usr/sbin/$c" --add "$A/init.d-service:/etc/init.d/$c"
           --add "$A/default-$c:/etc/default/$c")
done
if [ -n "$CONFIGS" ]; then
    for f in "$CONFIGS"/*.toml; do
        [ -e "$f" ] && adds+=(--add "$f:/etc/wk/configs/${f##*/}")
    done
fi
exec "$HERE/build-initramfs.sh" "$ARCH" "$OUT" "${adds[@]}"
