"""The Debian virtual appliance for the scenarios: Debian 12 with systemd as PID 1 on the
same QEMU boards (board/qemu/build-debian.sh), watchkeeper installed from its Debian package
with dpkg in the running guest, as an appliance builder or a technician would.

Disks: the root filesystem (a fresh copy of the cached ext4 image per guest, labelled wkroot) and the package disk (board/qemu/mkdisk.sh's ext4, mounted read-only on /mnt/pkg),
which holds the packages built from this tree: the current version and a newer one to
upgrade to. Their /dev/vdX names follow the virtio-mmio slots (the package disk is vda):
the root is the disk with /sbin/init, the package disk the other one.

  python3 tests/system/debian.py [arm64|armhf]   builds everything and boots it once (a smoke run)
"""
import glob
import os
import re
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from appliance import Appliance  # noqa: E402
from qemu_harness import BOARD_DIR, REPO, HarnessError  # noqa: E402

BOARD = {"arm64": "aarch64", "armhf": "armv7"}
# The kernel's console messages only from errors up, systemd's status lines off (in the
# image too): the console carries the control protocol.
APPEND = "quiet loglevel=3 systemd.show_status=0"
MEM = "1024M"
# The newer package the upgrade installs (board/build-deb --version).
UPGRADE_SUFFIX = "+wk.upgrade"


def _run(cmd, what):
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
    if r.returncode != 0:
        raise HarnessError(f"{what} failed ({' '.join(cmd)}):\n{r.stdout[-4000:]}")
    return r.stdout


def version():
    with open(os.path.join(REPO, "Cargo.toml")) as f:
        return re.search(r'^version = "(.*)"$', f.read(), re.M).group(1)


def build(arch, workdir):
    """The image, its initramfs and the package disk's content; returns a dict of paths and
    how long the root filesystem took (0 when cached)."""
    os.makedirs(workdir, exist_ok=True)
    t0 = time.monotonic()
    out = _run([os.path.join(BOARD_DIR, "qemu", "build-debian.sh"), arch, workdir], "build-debian.sh")
    t_image = time.monotonic() - t0
    built = "root filesystem built in" in out
    pkgs = os.path.join(workdir, f"pkg-{arch}")
    shutil.rmtree(pkgs, ignore_errors=True)
    os.makedirs(pkgs)
    v = version()
    for ver in (v, v + UPGRADE_SUFFIX):
        _run([os.path.join(BOARD_DIR, "build-deb"), "--version", ver, arch], "build-deb")
        shutil.copy(os.path.join(REPO, "target", "deb", f"watchkeeper_{ver}_{arch}.deb"), pkgs)
    return {
        "arch": arch,
        "root": os.path.join(workdir, f"debian-{arch}.ext4"),
        "initrd": os.path.join(workdir, f"debian-{arch}.cpio.gz"),
        "pkgs": pkgs,
        "image_seconds": t_image if built else 0.0,
        "deb": f"/mnt/pkg/watchkeeper_{v}_{arch}.deb",
        "deb_upgrade": f"/mnt/pkg/watchkeeper_{v}{UPGRADE_SUFFIX}_{arch}.deb",
        "version": v,
    }


def disks(images, workdir, tag):
    """A fresh root disk and a package disk for one guest."""
    root = os.path.join(workdir, f"{tag}-root.img")
    pkg = os.path.join(workdir, f"{tag}-pkg.img")
    _run(["cp", "--sparse=always", os.path.realpath(images["root"]), root], "copying the root filesystem")
    _run([os.path.join(BOARD_DIR, "qemu", "mkdisk.sh"), pkg, "32M", "--from", images["pkgs"]],
         "mkdisk.sh of the package disk")
    return root, pkg


class DebianAppliance(Appliance):
    """A Debian guest with its root disk and its package disk."""

    def __init__(self, images, workdir, tag, append="", **kw):
        root, pkg = disks(images, workdir, tag)
        self.images, self.pkg_disk = images, pkg
        extra = ["-drive", f"if=none,id=wkpkg,file={pkg},format=raw,readonly=on",
                 "-device", "virtio-blk-device,drive=wkpkg"]
        super().__init__(BOARD[images["arch"]], images["initrd"], root, workdir,
                         append=f"{APPEND} {append}".strip(), name=tag, mem=MEM,
                         extra_qemu_args=extra, **kw)

    def mount_packages(self):
        self.sh("mkdir -p /mnt/pkg; mountpoint -q /mnt/pkg && exit 0; root=$(findmnt -n -o SOURCE /); "
                "for d in /dev/vd?; do [ \"$d\" = \"$root\" ] || exec mount -o ro \"$d\" /mnt/pkg; done; exit 1")

    def install(self, deb, timeout=120):
        """`dpkg -i DEB` in the guest; returns its output (raises if it fails)."""
        self.mount_packages()
        out, rc = self.run(f"dpkg -i {deb} 2>&1", timeout=timeout)
        if rc != 0:
            raise HarnessError(f"{self.name}: dpkg -i {deb} exited {rc}:\n{out}")
        return out

    def journal(self, unit="watchkeeper"):
        return self.run(f"journalctl -b -o cat -u {unit} --no-pager 2>&1", timeout=60)[0]

    def monotonic_of(self, unit, prop="ActiveEnterTimestampMonotonic"):
        """A unit's timestamp, in seconds of CLOCK_MONOTONIC (since the kernel started)."""
        out = self.sh(f"systemctl show -P {prop} {unit}").strip()
        return int(out) / 1e6 if out.isdigit() else None


def smoke(arch):
    workdir = os.path.join(REPO, "target", "wk-qemu", f"debian-smoke-{arch}")
    t0 = time.monotonic()
    images = build(arch, os.path.join(REPO, "target", "wk-qemu", "debian-images"))
    print(f"images in {time.monotonic() - t0:.0f} s (root filesystem {images['image_seconds']:.0f} s)")
    shutil.rmtree(workdir, ignore_errors=True)
    os.makedirs(workdir)
    g = DebianAppliance(images, workdir, "smoke", led_interval=None, echo="-v" in sys.argv)
    try:
        g.start()
        b = g.wait_ready(timeout=180)
        print(f"WK-READY {b.t_ready - b.t_boot:.1f} s after WK-BOOT")
        print(g.run("systemctl is-system-running --wait; systemctl --failed --no-legend", timeout=180)[0])
        print(g.run("ls -l /dev/watchdog*; lsmod | grep -E 'i6300esb|softdog'")[0])
        t = time.monotonic()
        print(g.install(images["deb"]))
        print(f"dpkg -i in {time.monotonic() - t:.1f} s")
        print(g.run("systemctl is-active watchkeeper watchkeeper-shutdown; watchkeeper status")[0])
        print(g.journal())
    finally:
        g.close()


if __name__ == "__main__":
    for a in [x for x in sys.argv[1:] if x in BOARD] or ["arm64"]:
        smoke(a)
