"""The A/B update appliance for the boot-confirmation scenarios: Debian 12 with systemd, RAUC
and libubootenv (board/qemu/build-debian.sh --ab), booted by real U-Boot (Debian's
u-boot-qemu, `-bios`) whose boot script (board/qemu/debian-ab/boot.cmd) counts the boots of
each slot in the environment that the booted system's `rauc status mark-good` writes with
fw_setenv.

The system disk (GPT, built without root: sfdisk and dd on an image file):
  p1 boot       8 MiB    ext4, bootable: boot.scr
  p2 rootfs.0   384 MiB  slot A
  p3 rootfs.1   384 MiB  slot B (empty until RAUC installs into it)
  p4 uboot-env  1 MiB    the environment: BOOT_ORDER="A B", BOOT_A_LEFT=3, BOOT_B_LEFT=3
  p5 data       64 MiB   ext4 on /data in both slots: RAUC's status, watchkeeper's state
A second disk, read-only, carries the update bundles in (/mnt/pkg, as debian.py mounts it).

Each slot image is the --ab root filesystem with what an image builder puts in (written by
debugfs, no mount): the kernel and initramfs in /boot, the RAUC keyring, /etc/wk-version,
the watchkeeper package's files with its units enabled, the slot's config, and for a bad
update the sample service broken. Bundles are signed on the host (rauc bundle, verity
format) with a development CA made per run (openssl).
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from appliance import Appliance  # noqa: E402
from debian import APPEND, MEM, version  # noqa: E402
from qemu_harness import BOARD_DIR, REPO, HarnessError  # noqa: E402

UBOOT = "/usr/lib/u-boot/qemu_arm64/u-boot.bin"
SLOT_MIB = 384
COMPATIBLE = "watchkeeper-qemu-arm64"


def _run(cmd, what, **kw):
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False, **kw)
    if r.returncode != 0:
        raise HarnessError(f"{what} failed ({' '.join(map(str, cmd))}):\n{r.stdout[-4000:]}")
    return r.stdout


def make_keys(keys):
    """A development CA (the slots' keyring) and a signing certificate it issued."""
    os.makedirs(keys, exist_ok=True)
    cnf = os.path.join(keys, "openssl.cnf")
    with open(cnf, "w") as f:
        f.write("[req]\ndistinguished_name = dn\nprompt = no\n[dn]\nCN = watchkeeper test\n"
                "[v3_ca]\nbasicConstraints = critical,CA:true\nkeyUsage = critical,keyCertSign,cRLSign\n"
                "subjectKeyIdentifier = hash\n"
                "[v3_leaf]\nbasicConstraints = critical,CA:false\nkeyUsage = critical,digitalSignature\n"
                "subjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid,issuer\n")
    k = lambda name: os.path.join(keys, name)  # noqa: E731
    _run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30", "-config", cnf,
          "-extensions", "v3_ca", "-subj", "/O=watchkeeper test/CN=test CA",
          "-keyout", k("ca.key.pem"), "-out", k("ca.cert.pem")], "openssl (CA)")
    _run(["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-config", cnf,
          "-subj", "/O=watchkeeper test/CN=test signing", "-keyout", k("signing.key.pem"),
          "-out", k("signing.csr.pem")], "openssl (signing request)")
    _run(["openssl", "x509", "-req", "-in", k("signing.csr.pem"), "-CA", k("ca.cert.pem"),
          "-CAkey", k("ca.key.pem"), "-CAcreateserial", "-days", "30", "-extfile", cnf,
          "-extensions", "v3_leaf", "-out", k("signing.cert.pem")], "openssl (signing certificate)")
    return {"ca": k("ca.cert.pem"), "key": k("signing.key.pem"), "cert": k("signing.cert.pem")}


def build(workdir):
    """The --ab root filesystem and its initramfs, the package, the keys, the boot script."""
    os.makedirs(workdir, exist_ok=True)
    out = _run([os.path.join(BOARD_DIR, "qemu", "build-debian.sh"), "--ab", "arm64", workdir],
               "build-debian.sh --ab")
    v = version()
    _run([os.path.join(BOARD_DIR, "build-deb"), "--version", v, "arm64"], "build-deb")
    deb = os.path.join(workdir, f"watchkeeper_{v}_arm64.deb")
    shutil.copy(os.path.join(REPO, "target", "deb", f"watchkeeper_{v}_arm64.deb"), deb)
    keys = make_keys(os.path.join(workdir, "ab-keys"))
    return {
        "root": os.path.join(workdir, "debian-ab-arm64.ext4"),
        "initrd": os.path.join(workdir, "debian-ab-arm64.cpio.gz"),
        "deb": deb,
        "keys": keys,
        "workdir": workdir,
        "image_built": "root filesystem built in" in out,
    }


def debugfs(image, commands):
    """Runs debugfs -w COMMANDS on IMAGE; then e2fsck -fn must find it clean."""
    with tempfile.NamedTemporaryFile("w", suffix=".debugfs", delete=False) as f:
        f.write("\n".join(commands) + "\n")
    try:
        _run(["debugfs", "-w", "-f", f.name, image], "debugfs")
    finally:
        os.unlink(f.name)
    _run(["e2fsck", "-fn", image], f"e2fsck of {image}")


def put_file(commands, src, dest, mode=0o644):
    commands += [f"rm {dest}", f"write {src} {dest}", f"sif {dest} mode 0{0o100000 | mode:o}",
                 f"sif {dest} uid 0", f"sif {dest} gid 0"]


def put_tree(commands, tree):
    """Every directory, file and symlink under TREE, at the same place in the image."""
    for top, dirs, files in os.walk(tree):
        rel = os.path.relpath(top, tree)
        dest = "/" if rel == "." else "/" + rel
        for d in sorted(dirs):
            path = os.path.join(dest, d)
            if os.path.islink(os.path.join(top, d)):
                commands += [f"symlink {path} {os.readlink(os.path.join(top, d))}"]
            else:
                commands += [f"mkdir {path}"]
        for name in sorted(files):
            src = os.path.join(top, name)
            path = os.path.join(dest, name)
            if os.path.islink(src):
                commands += [f"rm {path}", f"symlink {path} {os.readlink(src)}"]
            else:
                put_file(commands, src, path, os.stat(src).st_mode & 0o7777)


def slot_image(built, path, slot_version, config, broken=False):
    """A slot's root filesystem at PATH: the --ab image, /boot's kernel and initramfs, the
    keyring, /etc/wk-version, watchkeeper (package files, units enabled, CONFIG, its state
    on /data), and with BROKEN the sample service failing at every start."""
    shutil.copy(os.path.realpath(built["root"]), path)
    stage = tempfile.mkdtemp(prefix="wk-slot-")
    try:
        tree = os.path.join(stage, "tree")
        _run(["dpkg-deb", "-x", built["deb"], tree], "dpkg-deb -x")
        for name, text in [
            ("etc/watchkeeper.toml", config),
            ("etc/wk-version", f"version={slot_version}\n"),
            # the state directory is on /data, shared by both slots: mounted before the agent
            ("etc/systemd/system/watchkeeper.service.d/data.conf",
             "[Unit]\nRequiresMountsFor=/data/watchkeeper\n"),
        ] + ([("etc/systemd/system/wk-sample.service.d/broken.conf",
               "[Service]\nExecStart=\nExecStart=/bin/false\n")] if broken else []):
            os.makedirs(os.path.dirname(os.path.join(tree, name)), exist_ok=True)
            with open(os.path.join(tree, name), "w") as f:
                f.write(text)
        wants = {"basic.target.wants": "watchkeeper.service",
                 "multi-user.target.wants": "watchkeeper-shutdown.service"}
        for target, unit in wants.items():
            os.makedirs(os.path.join(tree, "etc/systemd/system", target), exist_ok=True)
            os.symlink(f"/usr/lib/systemd/system/{unit}", os.path.join(tree, "etc/systemd/system", target, unit))
        boot = os.path.join(tree, "boot")
        os.makedirs(boot, exist_ok=True)
        kernel = _run([os.path.join(BOARD_DIR, "qemu", "fetch-kernel.sh"), "arm64"], "fetch-kernel.sh")
        vmlinuz = next(line.split("=", 1)[1].strip("'") for line in kernel.splitlines()
                       if line.startswith("WK_KERNEL="))
        shutil.copy(vmlinuz, os.path.join(boot, "vmlinuz"))
        shutil.copy(built["initrd"], os.path.join(boot, "initrd.cpio.gz"))
        os.makedirs(os.path.join(tree, "etc/rauc"), exist_ok=True)
        shutil.copy(built["keys"]["ca"], os.path.join(tree, "etc/rauc/keyring.pem"))
        commands = []
        put_tree(commands, tree)
        debugfs(path, commands)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return path


def bundle(built, slot, slot_version, path):
    """A verity bundle at PATH whose image is the slot root filesystem SLOT."""
    d = tempfile.mkdtemp(prefix="wk-bundle-")
    try:
        shutil.copy(slot, os.path.join(d, "rootfs.ext4"))
        with open(os.path.join(d, "manifest.raucm"), "w") as f:
            f.write(f"[update]\ncompatible={COMPATIBLE}\nversion={slot_version}\n\n"
                    "[bundle]\nformat=verity\n\n[image.rootfs]\nfilename=rootfs.ext4\n")
        if os.path.exists(path):
            os.remove(path)
        k = built["keys"]
        _run(["rauc", "bundle", f"--cert={k['cert']}", f"--key={k['key']}", f"--keyring={k['ca']}", d, path],
             "rauc bundle")
    finally:
        shutil.rmtree(d, ignore_errors=True)
    return path


def _starts(disk):
    table = json.loads(_run(["sfdisk", "-J", disk], "sfdisk -J"))
    return [p["start"] for p in table["partitiontable"]["partitions"]]


def system_disk(built, path, slot_a):
    """The system disk at PATH with SLOT_A in slot A (see the module doc)."""
    w = built["workdir"]
    total = 1 + 8 + 2 * SLOT_MIB + 1 + 64 + 1
    with open(path, "wb") as f:
        f.truncate(total << 20)
    layout = (f"label: gpt\nstart=1MiB, size=8MiB, type=L, name=boot, attrs=\"LegacyBIOSBootable\"\n"
              f"size={SLOT_MIB}MiB, type=L, name=rootfs.0\nsize={SLOT_MIB}MiB, type=L, name=rootfs.1\n"
              "size=1MiB, type=L, name=uboot-env\nsize=64MiB, type=L, name=data\n")
    _run(["sfdisk", "-q", path], "sfdisk", input=layout)
    stage = tempfile.mkdtemp(prefix="wk-disk-")
    try:
        with open(os.path.join(BOARD_DIR, "qemu", "debian-ab", "boot.cmd")) as f:
            script = f.read().replace("@APPEND@", APPEND)
        os.makedirs(os.path.join(stage, "boot"))
        with open(os.path.join(stage, "boot.cmd"), "w") as f:
            f.write(script)
        _run(["mkimage", "-A", "arm64", "-T", "script", "-C", "none", "-d", os.path.join(stage, "boot.cmd"),
              os.path.join(stage, "boot", "boot.scr")], "mkimage")
        boot, data, env = (os.path.join(stage, n) for n in ("boot.ext4", "data.ext4", "env.bin"))
        _run(["mke2fs", "-q", "-t", "ext4", "-L", "boot", "-d", os.path.join(stage, "boot"), boot, "8M"], "mke2fs boot")
        _run(["mke2fs", "-q", "-t", "ext4", "-L", "data", data, "64M"], "mke2fs data")
        with open(os.path.join(stage, "env.txt"), "w") as f:
            f.write("BOOT_ORDER=A B\nBOOT_A_LEFT=3\nBOOT_B_LEFT=3\n")
        _run(["mkenvimage", "-s", "0x20000", "-o", env, os.path.join(stage, "env.txt")], "mkenvimage")
        starts = _starts(path)
        for image, part in ((boot, 0), (slot_a, 1), (env, 3), (data, 4)):
            _run(["dd", f"if={image}", f"of={path}", "bs=512", f"seek={starts[part]}", "conv=notrunc,sparse",
                  "status=none"], "dd")
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return path


def transfer_disk(path, files):
    """An ext4 disk at PATH holding FILES (the bundles), mounted read-only on /mnt/pkg."""
    d = tempfile.mkdtemp(prefix="wk-xfer-")
    try:
        for f in files:
            shutil.copy(f, d)
        size = sum(os.path.getsize(f) for f in files) // (1 << 20) + 32
        _run([os.path.join(BOARD_DIR, "qemu", "mkdisk.sh"), path, f"{size}M", "--from", d], "mkdisk.sh")
    finally:
        shutil.rmtree(d, ignore_errors=True)
    return path


class ABAppliance(Appliance):
    """The A/B appliance: U-Boot from its flash, the system disk, the transfer disk."""

    def __init__(self, system, transfer, workdir, tag, **kw):
        # virtio-mmio numbers the devices given last first: the system disk goes after the
        # transfer disk (qemu.sh's --disk) to be U-Boot's virtio 0 and Linux's vda.
        extra = ["-drive", f"if=none,id=wksystem,file={system},format=raw,cache=writeback",
                 "-device", "virtio-blk-device,drive=wksystem"]
        super().__init__("aarch64", None, transfer, workdir, name=tag, mem=MEM, bios=UBOOT,
                         extra_qemu_args=extra, **kw)

    def mount_transfer(self):
        """The transfer disk (the second virtio disk, vdb) on /mnt/pkg."""
        self.sh("mkdir -p /mnt/pkg; mountpoint -q /mnt/pkg || mount -o ro /dev/vdb /mnt/pkg")

    def uboot_lines(self):
        """The boot script's WK-UBOOT lines so far, in order."""
        return [text for _, text in self.lines if text.startswith("WK-UBOOT ")]
