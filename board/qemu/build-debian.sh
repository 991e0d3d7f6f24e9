#!/usr/bin/env bash
# build-debian.sh [--ab] ARCH OUTDIR
#
# The Debian virtual appliance: a real Debian 12 with systemd as PID 1, for the same QEMU
# boards as the BusyBox appliance. Writes
#   OUTDIR/debian-ARCH.ext4         the root filesystem, 1 GiB, ext4 labelled wkroot
#                                   (mmdebstrap in unshare mode, packed with `mke2fs -d`: no
#                                   root mounts); copy it per guest (cp --sparse=always)
#   OUTDIR/debian-ARCH.cpio.gz      its initramfs (board/qemu/debian/init: mounts /dev/vda,
#                                   switch_root to systemd)
# ARCH is arm64 or armhf. The image is cached in the fetch-kernel.sh cache directory, under
# a key of everything that goes into it (this script, board/qemu/debian/, the control shell,
# the kernel release): a cached build is offline and takes a second. Not root: the tarball
# is unpacked and packed under fakeroot, so the image's files are still root's.
#
# What the image holds beyond minbase + systemd, udev, kmod, procps, util-linux and
# prometheus-node-exporter (disabled; not in the A/B image): the cached
# kernel's watchdog module in /lib/modules (udev loads the i6300esb; armhf's softdog is
# named in modules-load.d), the control shell as wk-control.service on ttyAMA0 (serial
# getty masked), a shutdown marker unit, the sample service wk-sample, no docs or man
# pages. Not watchkeeper: the tests install its package with dpkg in the running guest.
# Packages come from this machine's own apt sources.
#
# --ab: the A/B update appliance instead (OUTDIR/debian-ab-ARCH.ext4, 384 MiB, to fit a
# slot): RAUC (rauc, rauc-service, dbus), libubootenv's fw_printenv/fw_setenv, the modules
# RAUC mounts bundles with (loop, squashfs, dm-verity), /etc/rauc/system.conf,
# /etc/fw_env.config and an fstab mounting the shared /data (board/qemu/debian-ab/). The
# keyring and the kernel in /boot are each slot's, written in by tests/system/ab.py.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
usage() { sed -n '2,26p' "${BASH_SOURCE[0]}" >&2; exit 2; }
AB=0
[ "${1:-}" = --ab ] && { AB=1; shift; }
[ $# -eq 2 ] || usage
ARCH=$1 OUT=$2
case $ARCH in
    arm64) WATCHDOG_MODULE=i6300esb ;;
    armhf) WATCHDOG_MODULE=softdog ;;
    *) usage ;;
esac
mkdir -p "$OUT"
eval "$("$HERE/fetch-kernel.sh" "$ARCH")"
G=$HERE/debian
GAB=$HERE/debian-ab
CONTROL_SHELL=$HERE/rootfs/etc/wk/control-shell
BASE=systemd,systemd-sysv,udev,kmod,procps,util-linux
# node_exporter: the fleet export's scenario scrapes it (its textfile collector reads
# /var/lib/prometheus/node-exporter, Debian's default). Disabled: only that scenario starts
# it, so that the others' boots do not pay for it under emulation.
FLAVOR=debian SIZE=1G PACKAGES=$BASE,prometheus-node-exporter
EXTRA_DISABLE=prometheus-node-exporter.service
if [ "$AB" = 1 ]; then
    FLAVOR=debian-ab SIZE=384M PACKAGES=$BASE,dbus,rauc,rauc-service,libubootenv-tool
    EXTRA_DISABLE=
fi
# RAUC's bundle mounts, with what they depend on (a verity bundle: dm-verity).
AB_MODULES="loop squashfs dax dm-mod dm-bufio reed_solomon dm-verity"

# The key: what goes into the tarball (not the initramfs's init), names and modes included.
key=$( { cat "${BASH_SOURCE[0]}" "$CONTROL_SHELL";
         for f in "$G"/*; do [ "${f##*/}" = init ] || { stat -c '%n %a' "$f"; cat "$f"; }; done
         [ "$AB" = 0 ] || for f in "$GAB"/*; do [ "${f##*/}" = boot.cmd ] || { stat -c '%n %a' "$f"; cat "$f"; }; done
         echo "$ARCH $WK_KERNEL_RELEASE $WATCHDOG_MODULE $AB $AB_MODULES"; } | sha256sum | cut -c1-16)
cache_dir=$(dirname "$WK_KERNEL")
cached=$cache_dir/$FLAVOR-bookworm-$key.ext4

# One build at a time per architecture: a second one waits, then finds the image cached.
exec 9>"$cache_dir/$FLAVOR-build.lock"
flock 9
if [ ! -s "$cached" ]; then
    sources=()
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
        [ -s "$f" ] && sources+=("$f")
    done
    [ ${#sources[@]} -gt 0 ] || { echo "build-debian: this machine has no apt sources" >&2; exit 1; }
    rm -rf "$cache_dir/$FLAVOR"-bookworm-*   # older keys: one image per architecture
    tmp=$cache_dir/$FLAVOR-bookworm-$key.tmp
    hooks=()
    if [ "$AB" = 1 ]; then
        # The modules, from the kernel package, under /usr/lib (merged /usr: a lib/ of
        # their own would replace the /lib symlink).
        rm -rf "$tmp.kdeb" "$tmp.mods"
        dpkg-deb -x "$cache_dir/debs/${WK_KERNEL_PKG}_${WK_KERNEL_DEB_VERSION}_$ARCH.deb" "$tmp.kdeb"
        kmods=$tmp.kdeb/lib/modules/$WK_KERNEL_RELEASE
        for m in $AB_MODULES; do
            src=$(find "$kmods/kernel" -name "$m.ko" | head -n 1)
            [ -n "$src" ] || { echo "build-debian: module $m not in $WK_KERNEL_PKG" >&2; exit 1; }
            rel=${src#"$tmp.kdeb/"}
            mkdir -p "$tmp.mods/usr/$(dirname "$rel")"
            cp "$src" "$tmp.mods/usr/$rel"
        done
        hooks+=(--customize-hook="sync-in $tmp.mods /"
                --customize-hook="mkdir -p \"\$1/etc/rauc\" \"\$1/data\""
                --customize-hook="chroot \"\$1\" depmod $WK_KERNEL_RELEASE"
                --customize-hook="copy-in $GAB/rauc-system.conf $GAB/fw_env.config $GAB/fstab /etc"
                --customize-hook="mv \"\$1/etc/rauc-system.conf\" \"\$1/etc/rauc/system.conf\"")
    fi
    t0=$(date +%s)
    echo "build-debian: building the $FLAVOR 12 $ARCH root filesystem (mmdebstrap)..." >&2
    kmod_dir=/lib/modules/$WK_KERNEL_RELEASE/kernel/drivers/watchdog
    mmdebstrap --mode=unshare --format=tar --variant=minbase --arch="$ARCH" \
        --include="$PACKAGES" \
        --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
        --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/info/*' \
        --customize-hook="mkdir -p \"\$1$kmod_dir\" \"\$1/usr/local/sbin\" \"\$1/etc/systemd/system.conf.d\" \"\$1/etc/modules-load.d\"" \
        --customize-hook="copy-in $WK_MODULES_DIR/$WATCHDOG_MODULE.ko $kmod_dir" \
        --customize-hook="chroot \"\$1\" depmod $WK_KERNEL_RELEASE" \
        --customize-hook="copy-in $CONTROL_SHELL /usr/local/sbin" \
        --customize-hook="mv \"\$1/usr/local/sbin/control-shell\" \"\$1/usr/local/sbin/wk-control-shell\"" \
        --customize-hook="copy-in $G/wk-sample /usr/local/sbin" \
        --customize-hook="copy-in $G/wk-control.service $G/wk-shutdown-marker.service $G/wk-sample.service /etc/systemd/system" \
        --customize-hook="copy-in $G/system.conf /etc/systemd/system.conf.d" \
        --customize-hook="mv \"\$1/etc/systemd/system.conf.d/system.conf\" \"\$1/etc/systemd/system.conf.d/wk-console.conf\"" \
        --customize-hook="echo $WATCHDOG_MODULE >\"\$1/etc/modules-load.d/watchdog.conf\"" \
        --customize-hook="echo 'LABEL=wkroot / ext4 rw,errors=remount-ro 0 0' >\"\$1/etc/fstab\"" \
        "${hooks[@]}" \
        --customize-hook="echo wk-debian-$ARCH >\"\$1/etc/hostname\"" \
        --customize-hook="chroot \"\$1\" systemctl mask serial-getty@ttyAMA0.service getty@tty1.service" \
        --customize-hook="chroot \"\$1\" systemctl enable wk-control.service wk-shutdown-marker.service wk-sample.service" \
        --customize-hook="[ -z '$EXTRA_DISABLE' ] || chroot \"\$1\" systemctl disable $EXTRA_DISABLE" \
        bookworm "$tmp.tar" "${sources[@]}" >&2
    # /dev is left out: the initramfs moves its devtmpfs there.
    rm -rf "$tmp.d"
    mkdir "$tmp.d"
    pack="tar -xpf '$tmp.tar' -C '$tmp.d' --exclude='./dev/*' &&
          mke2fs -q -F -t ext4 -b 4096 -L wkroot -d '$tmp.d' '$tmp.ext4' $SIZE"
    if [ "$(id -u)" -eq 0 ]; then sh -c "$pack"; else fakeroot sh -c "$pack"; fi
    rm -rf "$tmp.d" "$tmp.tar" "$tmp.kdeb" "$tmp.mods"
    mv "$tmp.ext4" "$cached"
    echo "build-debian: $FLAVOR $ARCH root filesystem built in $(( $(date +%s) - t0 )) s ($(du -m "$cached" | cut -f1) MB used of $SIZE)" >&2
fi
ln -sf "$cached" "$OUT/$FLAVOR-$ARCH.ext4"

list=$(mktemp)
trap 'rm -f "$list"' EXIT
{
    echo "file /init $G/init 0755 0 0"
    echo "file /bin/busybox $WK_BUSYBOX 0755 0 0"
    echo "nod /dev/console 0600 0 0 c 5 1"
    echo "dir /newroot 0755 0 0"
    for m in virtio_mmio virtio_blk crc32c_generic crc16 mbcache jbd2 ext4; do
        echo "file /lib/modules/$m.ko $WK_MODULES_DIR/$m.ko 0644 0 0"
    done
} >"$list"
python3 "$HERE/gen_cpio.py" "$list" "$OUT/$FLAVOR-$ARCH.cpio.gz"
echo "$OUT/$FLAVOR-$ARCH.ext4 $OUT/$FLAVOR-$ARCH.cpio.gz"
