#!/usr/bin/env bash
# build-appliance.sh BOARD OUT.cpio.gz [--binary FILE] [--config FILE] [--configs DIR]
#                    [--add SRC:DEST]...
#
# The watchkeeper appliance's initramfs for BOARD (aarch64 | armv7): build-initramfs.sh
# plus the agent and everything around it:
#   /usr/sbin/watchkeeper            --binary (default: target/<triple>/release/watchkeeper)
#   /etc/watchkeeper.toml            --config (default: board/qemu-BOARD-virt/demo.toml)
#   /etc/wk/configs/NAME.toml        every *.toml of --configs DIR (chosen with wk.config=NAME)
#   /usr/sbin/{sensord,uplink}       the sample components (appliance/component)
#   /etc/init.d/{sensord,uplink}     their init scripts, which the repairs call
#   /etc/default/{sensord,uplink}    their settings (startup delay, beat interval)
#   /etc/wk/prepare.d/50-appliance   chooses the config, starts the components (sysinit)
#   /etc/inittab                     the base one plus board/init/inittab's BusyBox lines:
#                                    init respawns `watchkeeper run` and runs `watchkeeper
#                                    shutdown` at a reboot or power-off
#   --add SRC:DEST                   anything else (passed to build-initramfs.sh)
# Does not build the binary (cargo build --release --target ... does).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
usage() { sed -n '2,18p' "${BASH_SOURCE[0]}" >&2; exit 2; }
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
extra=()
while [ $# -gt 0 ]; do
    case $1 in
        --binary) BINARY=$2; shift 2 ;;
        --config) CONFIG=$2; shift 2 ;;
        --configs) CONFIGS=$2; shift 2 ;;
        --add) extra+=(--add "$2"); shift 2 ;;
        *) usage ;;
    esac
done
[ -x "$BINARY" ] || { echo "build-appliance: no watchkeeper binary at $BINARY (cargo build --release --target $TRIPLE)" >&2; exit 1; }
[ -f "$CONFIG" ] || { echo "build-appliance: no config $CONFIG" >&2; exit 1; }

# The agent's lines go before the base inittab's last ::shutdown: line, which unmounts the
# disk that `watchkeeper shutdown` records the shutdown on.
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
BASE=$HERE/rootfs/etc/inittab
{
    grep -v '^::shutdown:' "$BASE"
    echo "# board/init/inittab (BusyBox init)"
    grep '^::' "$REPO/board/init/inittab"
    grep '^::shutdown:' "$BASE"
} >"$WORK/inittab"
grep -q '^::respawn:/usr/sbin/watchkeeper run$' "$WORK/inittab" ||
    { echo "build-appliance: board/init/inittab has no BusyBox respawn line for the agent" >&2; exit 1; }

A=$HERE/appliance
adds=(
    --add "$BINARY:/usr/sbin/watchkeeper"
    --add "$CONFIG:/etc/watchkeeper.toml"
    --add "$WORK/inittab:/etc/inittab"
    --add "$A/prepare:/etc/wk/prepare.d/50-appliance"
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
"$HERE/build-initramfs.sh" "$ARCH" "$OUT" "${adds[@]}" "${extra[@]}"
