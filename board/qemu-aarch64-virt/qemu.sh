#!/usr/bin/env bash
# shellcheck disable=SC2034 # the board variables are read by the sourced qemu-common.sh
# Boots the 64-bit ARM test appliance: QEMU "virt" board, Cortex-A57, Debian arm64 kernel,
# Intel 6300ESB watchdog on PCI (guest driver: i6300esb). Options: board/qemu/qemu-common.sh.
set -euo pipefail
BOARD=qemu-aarch64-virt
QEMU_BIN=qemu-system-aarch64
MACHINE=virt
CPU=cortex-a57          # -M virt alone would give a 32-bit CPU
FETCH_ARCH=arm64
# A watchdog that resets the board when not fed (QMP: WATCHDOG {"action":"reset"}, then
# SHUTDOWN {"reason":"guest-reset"}). Override with: -- -action watchdog=poweroff
BOARD_DEVICES=(-device i6300esb -action watchdog=reset)
# shellcheck source=board/qemu/qemu-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../qemu/qemu-common.sh"
