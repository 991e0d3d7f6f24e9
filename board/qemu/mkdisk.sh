#!/usr/bin/env bash
# mkdisk.sh OUT.img [SIZE] [--from DIR]
#
# Makes the appliance's persistent disk: a raw ext4 image (the guest mounts it from
# /dev/vda at /var/lib/watchkeeper). No root and no loop mount: mke2fs writes the file
# system straight into the image file, and -d copies an optional seed directory in.
# One image is meant to be reused across the boots (and resets) of one test, so state
# written by the guest survives them; make a fresh one per test for a clean start.
#   SIZE   mke2fs size, default 64M
#   --from DIR   initial content (owned by root in the image, whoever runs this)
set -euo pipefail

usage() { sed -n '2,11p' "${BASH_SOURCE[0]}" >&2; exit 2; }
[ $# -ge 1 ] || usage
OUT=$1; shift
SIZE=64M FROM=
while [ $# -gt 0 ]; do
    case $1 in
        --from) [ $# -ge 2 ] || usage; FROM=$2; shift 2 ;;
        -*) usage ;;
        *) SIZE=$1; shift ;;
    esac
done

MKE2FS=$(command -v mke2fs || echo /sbin/mke2fs)   # /sbin may be off a non-root PATH
args=(-q -F -t ext4 -L wkdata -E root_owner=0:0)
# Default features of the host's mke2fs (1.47: 64bit, metadata_csum, ...) are all
# read by the guest's 6.1 kernel; metadata_csum is why the guest loads crc32c_generic.
[ -n "$FROM" ] && args+=(-d "$FROM")

mkdir -p "$(dirname "$OUT")"
rm -f "$OUT"
"$MKE2FS" "${args[@]}" "$OUT" "$SIZE"
echo "$OUT"
