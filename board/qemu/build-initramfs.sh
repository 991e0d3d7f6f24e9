#!/usr/bin/env bash
# build-initramfs.sh ARCH OUT.cpio.gz [--add SRC:DEST ...] [--module NAME[:PARAMS]]
#
# Builds the appliance's initramfs: static BusyBox, the kernel modules fetched by
# fetch-kernel.sh, and the guest scripts in board/qemu/rootfs/ (/init, /etc/inittab,
# /etc/wk/*). No root needed: the archive (with its /dev/console node) is written by
# gen_cpio.py from a list, never from a tree of real device nodes.
#
#   ARCH            arm64 | armhf
#   --add SRC:DEST  put host file SRC at DEST in the guest (absolute path). A directory is
#                   added recursively. Executable bits are kept (0755/0644), owner is root.
#                   A DEST that already exists (e.g. /etc/inittab) is replaced.
#                   Typical: --add target/.../watchkeeper:/usr/sbin/watchkeeper
#                            --add watchkeeper.toml:/etc/watchkeeper.toml
#                            --add components/:/usr/lib/watchkeeper/components
#                            --add start.sh:/etc/wk/autostart.d/50-start
#   --module-param NAME:PARAMS   default insmod parameters, e.g. softdog:soft_margin=30
#                   (the kernel command line "softdog.soft_margin=N" adds to them per boot)
#
# The kernel and modules come from the fetch-kernel.sh cache (no network after its first run).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
usage() { sed -n '2,20p' "${BASH_SOURCE[0]}" >&2; exit 2; }
[ $# -ge 2 ] || usage
ARCH=$1 OUT=$2; shift 2

ADDS=()
declare -A MODPARAMS=(
    # softdog's default margin is 60 s; 30 s matches i6300esb's default heartbeat so both
    # boards behave alike when something opens /dev/watchdog without setting a timeout.
    [softdog]="soft_margin=30"
)
while [ $# -gt 0 ]; do
    case $1 in
        --add) [ $# -ge 2 ] || usage; ADDS+=("$2"); shift 2 ;;
        --module-param) [ $# -ge 2 ] || usage; MODPARAMS[${2%%:*}]=${2#*:}; shift 2 ;;
        *) usage ;;
    esac
done

eval "$("$HERE/fetch-kernel.sh" "$ARCH")"

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
LIST=$WORK/list

mode_of() { if [ -x "$1" ]; then echo 0755; else echo 0644; fi; }
# gen_cpio's list format is whitespace-separated: refuse names it can't carry.
check_name() { case $1 in *[[:space:]]*) echo "build-initramfs: whitespace in path: '$1'" >&2; exit 1 ;; esac; }

add_path() { # SRC DEST: a file, or a directory tree
    local src=$1 dest=$2 rel
    check_name "$src"; check_name "$dest"
    [ -e "$src" ] || { echo "build-initramfs: --add source not found: $src" >&2; exit 1; }
    case $dest in /*) ;; *) echo "build-initramfs: --add destination must be absolute: $dest" >&2; exit 1 ;; esac
    if [ -d "$src" ]; then
        echo "dir $dest 0755 0 0"
        (cd "$src" && find . -mindepth 1 | LC_ALL=C sort) | while read -r rel; do
            rel=${rel#./}
            check_name "$rel"
            if [ -L "$src/$rel" ]; then echo "slink $dest/$rel $(readlink "$src/$rel") 0777 0 0"
            elif [ -d "$src/$rel" ]; then echo "dir $dest/$rel 0755 0 0"
            else echo "file $dest/$rel $src/$rel $(mode_of "$src/$rel") 0 0"
            fi
        done
    else
        echo "file $dest $(realpath "$src") $(mode_of "$src") 0 0"
    fi
}

{
    echo "# skeleton"
    for d in /bin /sbin /usr/bin /usr/sbin /dev /proc /sys /run /tmp /root /mnt /var/lib/watchkeeper \
             /lib/modules/wk /etc/wk/prepare.d /etc/wk/autostart.d; do
        echo "dir $d 0755 0 0"
    done
    # The kernel opens /dev/console for /init before anything can mount devtmpfs.
    echo "nod /dev/console 0600 0 0 c 5 1"
    echo "nod /dev/null 0666 0 0 c 1 3"
    echo "file /bin/busybox $WK_BUSYBOX 0755 0 0"
    echo "slink /bin/sh busybox 0777 0 0"

    echo "# guest scripts"
    (cd "$HERE/rootfs" && find . -type f | LC_ALL=C sort) | while read -r rel; do
        echo "file ${rel#.} $HERE/rootfs/${rel#./} $(mode_of "$HERE/rootfs/$rel") 0 0"
    done

    echo "# kernel modules, in load order"
    for m in $WK_MODULES; do
        echo "file /lib/modules/wk/$m.ko $WK_MODULES_DIR/$m.ko 0644 0 0"
    done
    echo "file /etc/wk/modules $WORK/modules 0644 0 0"
    echo "file /etc/wk/build-info $WORK/build-info 0644 0 0"

    echo "# --add"
    for a in "${ADDS[@]}"; do
        [[ $a == *:* ]] || { echo "build-initramfs: --add wants SRC:DEST, got '$a'" >&2; exit 1; }
        add_path "${a%%:*}" "${a#*:}"
    done
} >"$LIST"

for m in $WK_MODULES; do echo "$m ${MODPARAMS[$m]:-}"; done >"$WORK/modules"
{
    echo "arch=$ARCH"
    echo "kernel_pkg=$WK_KERNEL_PKG $WK_KERNEL_DEB_VERSION"
    echo "kernel_release=$WK_KERNEL_RELEASE"
    echo "busybox=$WK_BUSYBOX_VERSION"
    echo "watchdog_module=$WK_WATCHDOG_MODULE"
} >"$WORK/build-info"

mkdir -p "$(dirname "$OUT")"
python3 "$HERE/gen_cpio.py" "$LIST" "$OUT"
echo "build-initramfs: $OUT ($(du -h "$OUT" | cut -f1), kernel $WK_KERNEL_RELEASE, modules: $WK_MODULES)" >&2
