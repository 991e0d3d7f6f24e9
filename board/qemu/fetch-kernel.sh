#!/usr/bin/env bash
# fetch-kernel.sh ARCH [--refresh]
#
# Gets a stock Debian kernel and a static BusyBox for the virtual appliance, from the
# machine's own apt sources (no mirror is named here: apt already knows them).
#   ARCH = arm64  -> linux-image-arm64 (booted on qemu-system-aarch64 -M virt, i6300esb watchdog)
#   ARCH = armhf  -> linux-image-armmp (booted on qemu-system-arm -M virt, softdog watchdog)
#
# Everything lands in a cache dir, so a second run needs no network at all:
#   ${WK_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/watchkeeper/ARCH}/
#     debs/                 the downloaded .deb files
#     vmlinuz config        kernel image and its build config (to check CONFIG_* options)
#     busybox               static busybox binary of ARCH
#     modules/NAME.ko       the needed modules, uncompressed (busybox insmod can't read .ko.xz)
#     manifest              the KEY=VALUE lines this script prints
#
# Output on stdout: KEY=VALUE lines (shell-safe, so callers can `eval "$(fetch-kernel.sh arm64)"`):
#   WK_ARCH WK_KERNEL_PKG WK_KERNEL_DEB_VERSION WK_KERNEL_RELEASE WK_KERNEL WK_KERNEL_CONFIG
#   WK_BUSYBOX WK_MODULES_DIR WK_MODULES (load order, dependencies first) WK_WATCHDOG_MODULE
#
# --refresh re-resolves the meta package (apt-get update + download of a newer ABI if any).
# WK_EXTRA_MODULES="a b" adds more root modules (their depends= chain is followed too).
# WK_APT_RELEASE=bookworm-backports takes the kernel (and busybox) from that suite instead
# of the default candidate (e.g. 6.12, whose modules are .ko.xz); its cache dir is ARCH-SUITE.
set -euo pipefail

usage() { echo "usage: $0 arm64|armhf [--refresh]" >&2; exit 2; }
[ $# -ge 1 ] || usage
ARCH=$1; shift
REFRESH=0
for a in "$@"; do
    case $a in --refresh) REFRESH=1 ;; *) usage ;; esac
done

case $ARCH in
    # The watchdog module comes first: the rest is what mounting the virtio ext4 disk needs.
    # crc32c_generic is listed by hand: ext4 only names it as a soft dependency
    # ("softdep=pre: crypto-crc32c"), and without it mounting a metadata_csum ext4 fails.
    arm64) META=linux-image-arm64 WATCHDOG=i6300esb ;;
    armhf) META=linux-image-armmp WATCHDOG=softdog ;;
    *) usage ;;
esac
ROOT_MODULES="$WATCHDOG virtio_mmio virtio_blk crc32c_generic ext4 ${WK_EXTRA_MODULES:-}"
read -r -a _mods <<<"$ROOT_MODULES"
ROOT_MODULES="${_mods[*]}"   # normalised spaces: it is compared with the manifest

REL=${WK_APT_RELEASE:-}
APT_OPTS=()
[ -n "$REL" ] && APT_OPTS=(-o "APT::Default-Release=$REL")
CACHE=${WK_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/watchkeeper/$ARCH${REL:+-$REL}}
mkdir -p "$CACHE/debs"

log() { echo "fetch-kernel[$ARCH]: $*" >&2; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# Fast path: a complete earlier run for the same module list -> no apt, no network.
if [ "$REFRESH" = 0 ] && [ -f "$CACHE/manifest" ] &&
    grep -qxF "WK_MODULE_ROOTS='$ROOT_MODULES'" "$CACHE/manifest" &&
    grep -qxF "WK_APT_RELEASE='$REL'" "$CACHE/manifest"; then
    cat "$CACHE/manifest"
    exit 0
fi

# ---- 1. resolve the meta package to the versioned kernel package (needs apt lists) ----
apt_updated=0
apt_update() {
    # A partly failing update is common (e.g. one foreign-arch index of the security suite
    # caught mid-sync answers "File has unexpected size"): apt then exits 100 but the other
    # indexes are fine. Go on; the resolution below is the real check.
    log "apt-get update"
    as_root apt-get update -qq >&2 || log "apt-get update reported errors (continuing; checked below)"
    apt_updated=1
}
# (captured first: `dpkg ... | grep -q` under pipefail can fail by SIGPIPE on a match)
foreign=$(dpkg --print-foreign-architectures)
if ! grep -qx "$ARCH" <<<"$foreign" && [ "$(dpkg --print-architecture)" != "$ARCH" ]; then
    log "adding dpkg architecture $ARCH"
    as_root dpkg --add-architecture "$ARCH"
    apt_update
fi
[ "$REFRESH" = 1 ] && [ "$apt_updated" = 0 ] && apt_update

resolve() {
    # "linux-image-arm64:arm64 / Depends: linux-image-6.1.0-50-arm64:arm64" -> the versioned name
    apt-cache "${APT_OPTS[@]}" depends "$META:$ARCH" 2>/dev/null |
        sed -n 's/^ *|\{0,1\}Depends: \(linux-image-[^:< ]*\).*/\1/p' | head -n 1
}
KPKG=$(resolve)
if [ -z "$KPKG" ] && [ "$apt_updated" = 0 ]; then apt_update; KPKG=$(resolve); fi
[ -n "$KPKG" ] || { log "cannot resolve $META:$ARCH to a versioned kernel package"; exit 1; }
log "$META -> $KPKG"

# ---- 2. download (skipped when the same .deb files are already cached) ----
download() { # PKG:ARCH -> path of the cached .deb
    local pkg=${1%%:*} ver deb
    ver=$(apt-cache "${APT_OPTS[@]}" policy "$1" | sed -n 's/^ *Candidate: //p')
    if [ -z "$ver" ] || [ "$ver" = "(none)" ]; then log "no candidate for $1"; exit 1; fi
    # .deb file names encode the epoch colon as %3a
    deb="$CACHE/debs/${pkg}_${ver//:/%3a}_${ARCH}.deb"
    if [ ! -s "$deb" ]; then
        log "apt-get download $1 ($ver)"
        # As root apt downloads through the unprivileged _apt user, which may not write
        # into $CACHE: tell it to stay root instead of warning.
        local sandbox=()
        [ "$(id -u)" -eq 0 ] && sandbox=(-o APT::Sandbox::User=root)
        (cd "$CACHE/debs" && apt-get download -qq "${APT_OPTS[@]}" "${sandbox[@]}" "$1" >&2)
    fi
    [ -s "$deb" ] || { log "download of $1 did not produce $deb"; exit 1; }
    echo "$deb"
}
KDEB=$(download "$KPKG:$ARCH")
BDEB=$(download "busybox-static:$ARCH")

# ---- 3. extract kernel, config, modules (with their depends= chain), busybox ----
WORK=$(mktemp -d "$CACHE/extract.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
log "extracting $(basename "$KDEB")"
dpkg-deb -x "$KDEB" "$WORK/k"
dpkg-deb -x "$BDEB" "$WORK/b"

first() { [ -e "$1" ] && echo "$1"; }   # first match of a glob, or nothing
vmlinuz=$(first "$WORK"/k/boot/vmlinuz-*) || { log "no /boot/vmlinuz-* in $KDEB"; exit 1; }
KREL=${vmlinuz##*/vmlinuz-}
# modules live in /lib/modules (bookworm) or /usr/lib/modules (merged-/usr packages)
MODROOT=$(first "$WORK"/k/lib/modules/* || first "$WORK"/k/usr/lib/modules/*) ||
    { log "no modules directory in $KDEB"; exit 1; }

rm -rf "$CACHE/modules.new"; mkdir -p "$CACHE/modules.new"
ORDER=()            # load order: every module after all of its dependencies
declare -A SEEN=()
add_module() {      # depth-first: dependencies first, then the module itself
    local name=$1 src dst deps d
    [ -n "${SEEN[$name]:-}" ] && return 0
    SEEN[$name]=1
    # module files use '_' or '-' interchangeably with the module name
    src=$(find "$MODROOT" \( -name "$name.ko*" -o -name "${name//_/-}.ko*" \) -print -quit)
    [ -n "$src" ] || { log "module $name not found in $KPKG (built in? check $CACHE/config)"; exit 1; }
    dst="$CACHE/modules.new/$name.ko"
    case $src in
        *.ko) cp "$src" "$dst" ;;
        *.ko.xz) xz -dc "$src" >"$dst" ;;
        *.ko.zst) zstd -qdc "$src" >"$dst" ;;
        *.ko.gz) gzip -dc "$src" >"$dst" ;;
        *) log "unknown module format: $src"; exit 1 ;;
    esac
    # modinfo's "depends=a,b" string is stored in the .modinfo section; the packages ship no
    # modules.dep, so this is how the dependency chain is found.
    deps=$(strings "$dst" | sed -n 's/^depends=//p' | head -n 1)
    for d in ${deps//,/ }; do add_module "$d"; done
    ORDER+=("$name")
}
for m in $ROOT_MODULES; do add_module "$m"; done

cp "$vmlinuz" "$CACHE/vmlinuz.new"
cp "$WORK/k/boot/config-$KREL" "$CACHE/config.new"
cp "$WORK/b/bin/busybox" "$CACHE/busybox.new"
chmod 0755 "$CACHE/busybox.new"

rm -rf "$CACHE/modules"
mv "$CACHE/modules.new" "$CACHE/modules"
mv "$CACHE/vmlinuz.new" "$CACHE/vmlinuz"
mv "$CACHE/config.new" "$CACHE/config"
mv "$CACHE/busybox.new" "$CACHE/busybox"
# Drop .deb files of older ABIs, keep the current ones for offline re-extraction.
for f in "$CACHE"/debs/*.deb; do
    [ "$f" = "$KDEB" ] || [ "$f" = "$BDEB" ] || rm -f "$f"
done

# The manifest is written last: its presence means the cache is complete.
{
    echo "WK_ARCH='$ARCH'"
    echo "WK_KERNEL_PKG='$KPKG'"
    echo "WK_KERNEL_DEB_VERSION='$(dpkg-deb -f "$KDEB" Version)'"
    echo "WK_KERNEL_RELEASE='$KREL'"
    echo "WK_KERNEL='$CACHE/vmlinuz'"
    echo "WK_KERNEL_CONFIG='$CACHE/config'"
    echo "WK_BUSYBOX='$CACHE/busybox'"
    echo "WK_BUSYBOX_VERSION='$(dpkg-deb -f "$BDEB" Version)'"
    echo "WK_MODULES_DIR='$CACHE/modules'"
    echo "WK_MODULES='${ORDER[*]}'"
    echo "WK_WATCHDOG_MODULE='$WATCHDOG'"
    echo "WK_MODULE_ROOTS='$ROOT_MODULES'"
    echo "WK_APT_RELEASE='$REL'"
} >"$CACHE/manifest.new"
mv "$CACHE/manifest.new" "$CACHE/manifest"
cat "$CACHE/manifest"
