# U-Boot boot script of the A/B appliance (mkimage -T script makes boot.scr of it; U-Boot's
# distro boot finds it on the bootable partition 1 of virtio disk 0). RAUC's U-Boot
# interface: BOOT_ORDER (slots, first choice first) and BOOT_A_LEFT / BOOT_B_LEFT (attempts
# left). The first slot in BOOT_ORDER with attempts left is booted, its count lowered and
# saved before the kernel starts; with none left, both are given 3 again and the board
# resets. The environment is one 128 KiB copy (crc32 + data, U-Boot's and libubootenv's
# format) on partition 4, named uboot-env, where the booted system's fw_setenv (RAUC's
# mark-good) writes it. Slot A is partition 2 (rootfs.0), slot B partition 3 (rootfs.1):
# each brings its own kernel and initramfs in /boot.
#   WK-UBOOT ...   what it read and chose (the harness reads it on the console)
setenv envaddr 0x48000000
part start virtio 0 4 envstart
if virtio read ${envaddr} ${envstart} 0x100 && env import -c ${envaddr} 0x20000 BOOT_ORDER BOOT_A_LEFT BOOT_B_LEFT; then
  echo "WK-UBOOT env BOOT_ORDER=${BOOT_ORDER} BOOT_A_LEFT=${BOOT_A_LEFT} BOOT_B_LEFT=${BOOT_B_LEFT}"
else
  echo "WK-UBOOT env unreadable: the defaults"
fi
test -n "${BOOT_ORDER}" || setenv BOOT_ORDER "A B"
test -n "${BOOT_A_LEFT}" || setenv BOOT_A_LEFT 3
test -n "${BOOT_B_LEFT}" || setenv BOOT_B_LEFT 3
setenv slot
for s in ${BOOT_ORDER}; do
  if test -z "${slot}" && test "${s}" = A && test ${BOOT_A_LEFT} -gt 0; then
    setexpr BOOT_A_LEFT ${BOOT_A_LEFT} - 1; setenv slot A; setenv rootpart 2; setenv rootname rootfs.0
  fi
  if test -z "${slot}" && test "${s}" = B && test ${BOOT_B_LEFT} -gt 0; then
    setexpr BOOT_B_LEFT ${BOOT_B_LEFT} - 1; setenv slot B; setenv rootpart 3; setenv rootname rootfs.1
  fi
done
if test -z "${slot}"; then
  echo "WK-UBOOT no slot has attempts left: both get 3 again"
  setenv BOOT_A_LEFT 3; setenv BOOT_B_LEFT 3
  env export -c -s 0x20000 ${envaddr} BOOT_ORDER BOOT_A_LEFT BOOT_B_LEFT
  virtio write ${envaddr} ${envstart} 0x100
  reset
fi
env export -c -s 0x20000 ${envaddr} BOOT_ORDER BOOT_A_LEFT BOOT_B_LEFT
virtio write ${envaddr} ${envstart} 0x100
echo "WK-UBOOT slot ${slot} BOOT_ORDER=${BOOT_ORDER} BOOT_A_LEFT=${BOOT_A_LEFT} BOOT_B_LEFT=${BOOT_B_LEFT}"
ext4load virtio 0:${rootpart} ${kernel_addr_r} /boot/vmlinuz
ext4load virtio 0:${rootpart} ${ramdisk_addr_r} /boot/initrd.cpio.gz
setenv bootargs "console=ttyAMA0 rdinit=/init root=PARTLABEL=${rootname} rauc.slot=${slot} @APPEND@"
booti ${kernel_addr_r} ${ramdisk_addr_r}:${filesize} ${fdt_addr}
