#!/usr/bin/env python3
"""Write a gzip'd newc cpio archive (a Linux initramfs) from a gen_init_cpio-style list.

Why not `cpio -o`: an initramfs needs device nodes (/dev/console) and root-owned files.
Creating those on the host needs root (mknod, chown) or fakeroot. Writing the archive
ourselves needs neither, and it is reproducible (all mtimes 0 or $SOURCE_DATE_EPOCH).

List format (the kernel's usr/gen_init_cpio format, one entry a line, '#' comments):
    file  <name> <source-path> <mode> <uid> <gid>
    dir   <name> <mode> <uid> <gid>
    nod   <name> <mode> <uid> <gid> <c|b> <major> <minor>
    slink <name> <target> <mode> <uid> <gid>
Modes are octal. Missing parent directories are added (0755 root). When a name appears
twice the later entry wins, so callers can override defaults (e.g. a custom /etc/inittab).

usage: gen_cpio.py LIST OUT.cpio.gz      (OUT '-' = stdout)
"""
import gzip
import os
import stat
import sys

MTIME = int(os.environ.get("SOURCE_DATE_EPOCH", "0"))


def parse(path):
    entries = {}  # name -> entry tuple; dicts keep first-insertion order
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            w = line.split()
            kind, name = w[0], "/" + w[1].strip("/")
            try:
                if kind == "file":
                    e = (kind, w[2], int(w[3], 8), int(w[4]), int(w[5]))
                elif kind == "dir":
                    e = (kind, None, int(w[2], 8), int(w[3]), int(w[4]))
                elif kind == "nod":
                    e = (kind, (w[5], int(w[6]), int(w[7])), int(w[2], 8), int(w[3]), int(w[4]))
                elif kind == "slink":
                    e = (kind, w[2], int(w[3], 8), int(w[4]), int(w[5]))
                else:
                    raise ValueError(f"unknown entry type {kind!r}")
            except (IndexError, ValueError) as exc:
                sys.exit(f"gen_cpio: {path}:{lineno}: bad entry {line!r}: {exc}")
            # add missing parents first so the kernel can create the file
            parent = os.path.dirname(name)
            missing = []
            while parent != "/" and parent not in entries:
                missing.append(parent)
                parent = os.path.dirname(parent)
            for d in reversed(missing):
                entries[d] = ("dir", None, 0o755, 0, 0)
            entries.pop(name, None)  # later wins; re-insert keeps parents before children
            entries[name] = e
    return entries


def header(ino, mode, uid, gid, nlink, size, rdev, name):
    namebytes = name.encode() + b"\0"
    fields = [ino, mode, uid, gid, nlink, MTIME, size, 0, 0, rdev[0], rdev[1], len(namebytes), 0]
    h = b"070701" + b"".join(b"%08X" % v for v in fields) + namebytes
    return h + b"\0" * (-len(h) % 4)


def write(entries, out):
    ino = 1
    for name, (kind, arg, mode, uid, gid) in entries.items():
        rel = name.lstrip("/")
        data, rdev, nlink = b"", (0, 0), 1
        if kind == "file":
            with open(arg, "rb") as f:
                data = f.read()
            mode |= stat.S_IFREG
        elif kind == "dir":
            mode |= stat.S_IFDIR
            nlink = 2
        elif kind == "nod":
            mode |= stat.S_IFCHR if arg[0] == "c" else stat.S_IFBLK
            rdev = (arg[1], arg[2])
        elif kind == "slink":
            data = arg.encode()
            mode |= stat.S_IFLNK
        out.write(header(ino, mode, uid, gid, nlink, len(data), rdev, rel))
        out.write(data + b"\0" * (-len(data) % 4))
        ino += 1
    out.write(header(0, 0, 0, 0, 1, 0, (0, 0), "TRAILER!!!"))


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    entries = parse(sys.argv[1])
    if sys.argv[2] == "-":
        with gzip.GzipFile(fileobj=sys.stdout.buffer, mode="wb", mtime=MTIME) as gz:
            write(entries, gz)
    else:
        tmp = sys.argv[2] + ".tmp"
        with open(tmp, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=MTIME, filename="") as gz:
            write(entries, gz)
        os.replace(tmp, sys.argv[2])


if __name__ == "__main__":
    main()
