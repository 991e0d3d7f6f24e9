# shellcheck shell=bash
# Sourced by board/qemu-*-virt/qemu.sh after it has set the board's facts:
#   QEMU_BIN  MACHINE  CPU  FETCH_ARCH  BOARD_DEVICES (array)  and the BOARD name.
# Parses the common options and execs QEMU (exec: the caller's PID is QEMU's, so a harness
# can signal it directly).
#
# usage: qemu.sh --initrd FILE [options] [-- extra qemu args]
#        qemu.sh --bios FILE [options] [-- extra qemu args]
#   --initrd FILE     initramfs from board/qemu/build-initramfs.sh (QEMU loads the kernel)
#   --bios FILE       a bootloader instead (U-Boot: it loads kernel and initramfs from a disk;
#                     --kernel, --initrd and --append are then its to choose)
#   --kernel FILE     default: the cached Debian kernel (board/qemu/fetch-kernel.sh)
#   --disk IMG        raw ext4 image (board/qemu/mkdisk.sh) -> guest /dev/vda (virtio-mmio)
#   --qmp PATH        QMP unix socket (server, no wait): events WATCHDOG/SHUTDOWN/RESET, HMP
#   --serial SPEC     stdio (default when stdin is not a terminal: raw pipe for a harness),
#                     mon:stdio (default on a terminal: Ctrl-A x quits, Ctrl-A c monitor),
#                     unix:PATH (server, waits for the client to connect)
#   --append TEXT     extra kernel command line (e.g. "wk.noautostart softdog.soft_margin=10")
#   --mem SIZE        guest RAM, default 256M
#   --smp N           CPUs, default 1 (TCG: more CPUs boot slower on a 2-core host)
#   --no-reboot       QEMU exits on a guest reset instead of rebooting in place
#   --dry-run         print the command and exit
set -euo pipefail

QEMU_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
usage() { sed -n '6,23p' "$QEMU_DIR/qemu-common.sh" >&2; exit 2; }

KERNEL='' INITRD='' BIOS='' DISK='' QMP='' SERIAL='' APPEND='' MEM=256M SMP=1 NOREBOOT=0 DRYRUN=0 EXTRA=()
while [ $# -gt 0 ]; do
    case $1 in
        --kernel) KERNEL=$2; shift 2 ;;
        --initrd) INITRD=$2; shift 2 ;;
        --bios) BIOS=$2; shift 2 ;;
        --disk) DISK=$2; shift 2 ;;
        --qmp) QMP=$2; shift 2 ;;
        --serial) SERIAL=$2; shift 2 ;;
        --append) APPEND=$2; shift 2 ;;
        --mem) MEM=$2; shift 2 ;;
        --smp) SMP=$2; shift 2 ;;
        --no-reboot) NOREBOOT=1; shift ;;
        --dry-run) DRYRUN=1; shift ;;
        --) shift; EXTRA=("$@"); break ;;
        *) usage ;;
    esac
done
[ -n "$INITRD$BIOS" ] || { echo "$BOARD/qemu.sh: --initrd is required (board/qemu/build-initramfs.sh makes one), or --bios" >&2; exit 2; }
if [ -z "$KERNEL" ] && [ -z "$BIOS" ]; then
    # From the cache: no network once fetch-kernel.sh has run.
    KERNEL=$("$QEMU_DIR/fetch-kernel.sh" "$FETCH_ARCH" | sed -n "s/^WK_KERNEL='\(.*\)'$/\1/p")
fi
if [ -z "$SERIAL" ]; then
    if [ -t 0 ]; then SERIAL=mon:stdio; else SERIAL=stdio; fi
fi
case $SERIAL in
    stdio|mon:stdio) SERIAL_ARG=$SERIAL ;;
    unix:*) SERIAL_ARG="unix:${SERIAL#unix:},server=on,wait=on" ;;
    *) echo "$BOARD/qemu.sh: bad --serial $SERIAL" >&2; exit 2 ;;
esac

cmd=(
    "$QEMU_BIN" -M "$MACHINE" -cpu "$CPU" -m "$MEM" -smp "$SMP"
    # Only what is asked for below: no default NIC, VGA, monitor or serial.
    -nodefaults -display none
    -serial "$SERIAL_ARG"
    "${BOARD_DEVICES[@]}"
)
if [ -n "$BIOS" ]; then
    cmd+=(-bios "$BIOS")
else
    # console on the PL011; rdinit is the default but named for clarity
    cmd+=(-kernel "$KERNEL" -initrd "$INITRD" -append "console=ttyAMA0 rdinit=/init ${APPEND}")
fi
if [ -n "$DISK" ]; then
    # virtio-mmio (not PCI): the guest needs only virtio_mmio + virtio_blk; the virt board
    # has 32 virtio-mmio slots. cache=writeback: guest fsync/sync reaches the image file.
    # shellcheck disable=SC2054 # the commas belong to QEMU's option syntax
    cmd+=(-drive "if=none,id=wkdisk,file=$DISK,format=raw,cache=writeback"
          -device virtio-blk-device,drive=wkdisk)
fi
[ -n "$QMP" ] && cmd+=(-qmp "unix:$QMP,server=on,wait=off")
[ "$NOREBOOT" = 1 ] && cmd+=(-no-reboot)
cmd+=("${EXTRA[@]}")

if [ "$DRYRUN" = 1 ]; then
    printf '%q ' "${cmd[@]}"; echo
    exit 0
fi
exec "${cmd[@]}"
