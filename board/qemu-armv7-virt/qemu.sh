#!/usr/bin/env bash
# shellcheck disable=SC2034 # the board variables are read by the sourced qemu-common.sh
# Boots the 32-bit ARM test appliance: QEMU "virt" board, Cortex-A15, Debian armhf "armmp"
# kernel (a zImage; QEMU generates the device tree, the kernel has ARCH_VIRT), and the
# kernel's softdog as the watchdog: the armmp kernels have no i6300esb driver, so no
# watchdog device is added. Options: board/qemu/qemu-common.sh.
set -euo pipefail
BOARD=qemu-armv7-virt
QEMU_BIN=qemu-system-arm
# highmem=off: keep every device below 4 GiB; the armmp kernel is not an LPAE kernel and
# can't reach the PCIe windows QEMU otherwise puts above 4 GiB for an LPAE-capable CPU.
MACHINE=virt,highmem=off
CPU=cortex-a15
FETCH_ARCH=armhf
BOARD_DEVICES=()
# shellcheck source=board/qemu/qemu-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../qemu/qemu-common.sh"
