"""Host-side harness for the watchkeeper QEMU appliance (python3 stdlib only).

It boots a guest with board/qemu-*-virt/qemu.sh, reads the serial console, talks to the
guest's control shell (board/qemu/rootfs/etc/wk/control-shell) and to QEMU's QMP socket,
and follows the guest across resets. Every timestamp is the host's time.monotonic().

    from qemu_harness import Guest, build_images
    initrd, disk = build_images("arm64", workdir)
    with Guest("aarch64", initrd, disk=disk, workdir=workdir) as g:
        g.wait_ready()                        # first boot
        out, rc = g.run("cat /proc/uptime")
        g.gpio_level(0)                       # PL061 line 0 as the host sees it
        ev = g.wait_event("SHUTDOWN", timeout=10)
        g.wait_ready(boot=2)                  # the guest rebooted in place

Console protocol (see control-shell): the host writes "WKC <token> <base64 command>", the
guest answers "WK-BEGIN <token>", the output, and "WK-END <token> <exit code>". /init
prints "WK-BOOT ..." first thing on every boot: that is how a new boot is recognised.
"""
import base64
import itertools
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BOARD_DIR = os.path.join(REPO, "board")

# board name -> (board directory, Debian architecture used by fetch-kernel.sh)
BOARDS = {
    "aarch64": ("qemu-aarch64-virt", "arm64"),
    "armv7": ("qemu-armv7-virt", "armhf"),
}

# PL061 GPIO controller of the QEMU virt board (both 32- and 64-bit). The data register is
# reached at base + (mask << 2): offset 0x3fc reads all 8 lines (bit N = line N). Reading
# it has no side effect, so the host can sample the lines without the guest's help.
PL061_BASE = 0x09030000
PL061_DATA = PL061_BASE + 0x3FC
PL061_DIR = PL061_BASE + 0x400  # bit N set = line N is an output
PL061_LABEL = "9030000.pl061"

# The tty's canonical-mode line buffer holds 4095 bytes; stay well below it.
MAX_COMMAND_LINE = 3800


class HarnessError(Exception):
    pass


class GuestRebooted(HarnessError):
    """The guest started a new boot while the harness was waiting for something else."""


@dataclass
class Boot:
    index: int  # 1 for the first boot of this QEMU process
    t_boot: float  # host time of the WK-BOOT line (the kernel has started /init)
    line_index: int  # index of that line in Guest.lines
    t_ready: float | None = None  # host time of WK-READY (control shell up)
    markers: list = field(default_factory=list)  # the WK-* lines of this boot


@dataclass
class Event:
    t: float  # host monotonic time the event was read
    name: str
    data: dict
    qemu_timestamp: float  # QEMU's own (wall clock) timestamp, for cross-checking


def build_images(arch, workdir, adds=(), disk_size="64M", rebuild_disk=True, module_params=()):
    """Builds the initramfs (and a fresh disk image) for ARCH ("arm64"/"armhf") in workdir.

    adds: iterable of (src, dest) for build-initramfs.sh --add. Returns (initrd, disk)."""
    os.makedirs(workdir, exist_ok=True)
    initrd = os.path.join(workdir, f"{arch}.cpio.gz")
    disk = os.path.join(workdir, f"{arch}-disk.img")
    cmd = [os.path.join(BOARD_DIR, "qemu", "build-initramfs.sh"), arch, initrd]
    for src, dest in adds:
        cmd += ["--add", f"{src}:{dest}"]
    for mp in module_params:
        cmd += ["--module-param", mp]
    subprocess.run(cmd, check=True)
    if rebuild_disk or not os.path.exists(disk):
        subprocess.run([os.path.join(BOARD_DIR, "qemu", "mkdisk.sh"), disk, disk_size],
                       check=True, stdout=subprocess.DEVNULL)
    return initrd, disk


class Guest:
    """One QEMU process running the appliance; it may go through several boots."""

    def __init__(self, board, initrd, disk=None, workdir=None, append="", no_reboot=False,
                 extra_qemu_args=(), name=None, echo=False, mem=None, bios=None):
        if board not in BOARDS:
            raise ValueError(f"board must be one of {sorted(BOARDS)}")
        self.board = board
        self.name = name or board
        # bios: a bootloader (U-Boot) that loads kernel and initrd itself (initrd then None)
        self.initrd, self.disk, self.bios = initrd, disk, bios
        self.append, self.no_reboot = append, no_reboot
        self.extra_qemu_args = list(extra_qemu_args)
        self.mem = mem  # guest RAM (qemu.sh --mem), None: the board's default
        self.echo = echo  # also print the console to stdout as it arrives
        self._own_workdir = workdir is None
        self.workdir = workdir or tempfile.mkdtemp(prefix="wk-qemu-")
        os.makedirs(self.workdir, exist_ok=True)
        # unix socket paths are limited to 107 bytes: keep the socket in a short temp dir
        self._sockdir = tempfile.mkdtemp(prefix="wkq-")
        self.qmp_path = os.path.join(self._sockdir, "qmp.sock")
        self.console_log_path = os.path.join(self.workdir, f"{self.name}-console.log")
        self.events_log_path = os.path.join(self.workdir, f"{self.name}-qmp-events.log")

        self.lines = []  # (host time, text) of every console line
        self.boots = []  # Boot per WK-BOOT line seen
        self.events = []  # Event per QMP event
        self.errors = []  # WK-ERROR lines
        self._cond = threading.Condition()
        self._partial = ""
        self._tokens = itertools.count(1)
        self._qmp_ids = itertools.count(1)
        self._qmp_replies = {}
        self._qmp_sock = None
        self._qmp_lock = threading.Lock()
        self.proc = None
        self._console_log = self._events_log = None
        self.t_start = None
        self.command = None
        self.exit_code = None

    # ---------------------------------------------------------------- lifecycle
    def start(self):
        board_dir, _ = BOARDS[self.board]
        boot = ["--bios", self.bios] if self.bios else ["--initrd", self.initrd]
        cmd = [os.path.join(BOARD_DIR, board_dir, "qemu.sh"), *boot,
               "--qmp", self.qmp_path, "--serial", "stdio"]
        if self.disk:
            cmd += ["--disk", self.disk]
        if self.append:
            cmd += ["--append", self.append]
        if self.no_reboot:
            cmd += ["--no-reboot"]
        if self.mem:
            cmd += ["--mem", self.mem]
        if self.extra_qemu_args:
            cmd += ["--"] + self.extra_qemu_args
        self.command = cmd
        self._console_log = open(self.console_log_path, "w", buffering=1)
        self._events_log = open(self.events_log_path, "w", buffering=1)
        self._console_log.write(f"# {' '.join(cmd)}\n")
        self.t_start = time.monotonic()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, bufsize=0)
        threading.Thread(target=self._read_console, args=(self.proc.stdout, False), daemon=True).start()
        threading.Thread(target=self._read_console, args=(self.proc.stderr, True), daemon=True).start()
        self._connect_qmp()
        return self

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()

    def close(self, timeout=10):
        """Stops QEMU (QMP quit, then kill) and releases everything. Safe to call twice."""
        if self.proc and self.proc.poll() is None:
            try:
                self.qmp("quit", timeout=3)
            except (HarnessError, OSError):
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc:
            self.exit_code = self.proc.returncode
        if self._qmp_sock:
            self._qmp_sock.close()
            self._qmp_sock = None
        with self._cond:  # the reader threads may still be logging
            for f in ("_console_log", "_events_log"):
                if getattr(self, f, None):
                    getattr(self, f).close()
                    setattr(self, f, None)
        shutil.rmtree(self._sockdir, ignore_errors=True)

    def wait_exit(self, timeout):
        """Waits for QEMU to exit by itself (e.g. guest poweroff); returns its exit code."""
        try:
            self.exit_code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise HarnessError(f"{self.name}: QEMU still running after {timeout}s") from None
        return self.exit_code

    # ---------------------------------------------------------------- console
    def _read_console(self, stream, is_stderr):
        while True:
            chunk = os.read(stream.fileno(), 65536)
            if not chunk:
                break
            t = time.monotonic()
            text = chunk.decode("utf-8", "replace")
            if is_stderr:
                for line in text.splitlines():
                    self._add_line(t, "[qemu stderr] " + line)
                continue
            text = self._partial + text.replace("\r\n", "\n")
            *complete, self._partial = text.split("\n")
            for line in complete:
                # busybox init starts some messages with a bare \r; drop carriage returns
                self._add_line(t, line.replace("\r", ""))
        with self._cond:
            if self._partial and not is_stderr:
                self._add_line(time.monotonic(), self._partial)
            self._cond.notify_all()

    def _add_line(self, t, line):
        with self._cond:
            idx = len(self.lines)
            self.lines.append((t, line))
            if line.startswith("WK-BOOT "):
                self.boots.append(Boot(len(self.boots) + 1, t, idx))
            if line.startswith("WK-") and self.boots:
                self.boots[-1].markers.append(line)
                if line.startswith("WK-READY") and self.boots[-1].t_ready is None:
                    self.boots[-1].t_ready = t
                if line.startswith("WK-ERROR"):
                    self.errors.append(line)
            if self._console_log:
                self._console_log.write(f"{t - self.t_start:9.3f} {line}\n")
            self._cond.notify_all()
        if self.echo:
            print(f"[{self.name} {t - self.t_start:7.3f}] {line}", flush=True)

    def _alive(self):
        return self.proc is not None and self.proc.poll() is None

    def tail(self, n=25):
        with self._cond:
            return "\n".join(l for _, l in self.lines[-n:])

    def wait_line(self, pattern, timeout, start=0, stop_on_boot=False):
        """Waits for a console line matching regex PATTERN at index >= START.

        Returns (index, host time, re.Match). stop_on_boot: raise GuestRebooted if a new
        WK-BOOT line shows up first (used while waiting on a command's answer)."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        i = start
        with self._cond:
            while True:
                while i < len(self.lines):
                    t, line = self.lines[i]
                    m = rx.search(line)
                    if m:
                        return i, t, m
                    if stop_on_boot and line.startswith("WK-BOOT "):
                        raise GuestRebooted(f"{self.name}: guest rebooted while waiting for {pattern!r}")
                    i += 1
                left = deadline - time.monotonic()
                if left <= 0:
                    raise HarnessError(f"{self.name}: no console line matching {pattern!r} within "
                                       f"{timeout}s; console tail:\n{self.tail()}")
                if not self._alive() and i >= len(self.lines):
                    raise HarnessError(f"{self.name}: QEMU exited (code {self.proc.poll()}) while "
                                       f"waiting for {pattern!r}; console tail:\n{self.tail()}")
                self._cond.wait(min(left, 0.5))

    def wait_boot(self, boot=None, timeout=60):
        """Waits until boot number BOOT (default: the next one) has printed WK-BOOT."""
        with self._cond:
            want = boot if boot is not None else len(self.boots) + 1
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.boots) < want:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise HarnessError(f"{self.name}: boot {want} did not start within {timeout}s; "
                                       f"console tail:\n{self.tail()}")
                if not self._alive():
                    raise HarnessError(f"{self.name}: QEMU exited before boot {want}")
                self._cond.wait(min(left, 0.5))
            return self.boots[want - 1]

    def wait_ready(self, boot=None, timeout=60):
        """Waits for WK-READY of boot number BOOT (default: the latest boot, or the first).

        Returns the Boot. Raises if the guest printed WK-ERROR during that boot."""
        t0 = time.monotonic()
        b = self.wait_boot(boot or max(1, len(self.boots)), timeout)
        self.wait_line(r"^WK-READY", timeout - (time.monotonic() - t0), start=b.line_index)
        if any(m.startswith("WK-ERROR") for m in b.markers):
            raise HarnessError(f"{self.name}: boot {b.index} reported errors: "
                               f"{[m for m in b.markers if m.startswith('WK-ERROR')]}")
        return b

    def send_line(self, text):
        data = text.encode() + b"\n"
        while data:  # an unbuffered pipe may take a write in parts
            data = data[os.write(self.proc.stdin.fileno(), data):]

    # A console command's answer may take long on a busy 2-core host (TCG runs the guest in
    # one host thread): the deadline is for a guest that hangs, not for a slow one.
    COMMAND_TIMEOUT = 90

    def run(self, command, timeout=COMMAND_TIMEOUT, check=False):
        """Runs COMMAND with `sh -c` in the guest; returns (output, exit code).

        Output is stdout+stderr as text ('\\n' line ends). check=True raises on a non-zero
        exit code. Raises GuestRebooted if the guest reboots before answering."""
        token = f"{next(self._tokens)}-{secrets.token_hex(4)}"
        encoded = base64.b64encode(command.encode()).decode()
        line = f"WKC {token} {encoded}"
        if len(line) > MAX_COMMAND_LINE:
            raise HarnessError(f"command too long for the console line ({len(line)} bytes); "
                               "add a script to the initramfs with --add instead")
        with self._cond:
            start = len(self.lines)
        self.send_line(line)
        deadline = time.monotonic() + timeout
        b, _, _ = self.wait_line(rf"^WK-BEGIN {re.escape(token)}$", timeout, start, stop_on_boot=True)
        e, _, m = self.wait_line(rf"^WK-END {re.escape(token)} (\d+)$",
                                 max(0.1, deadline - time.monotonic()), b + 1, stop_on_boot=True)
        with self._cond:
            output = "\n".join(l for _, l in self.lines[b + 1:e])
        rc = int(m.group(1))
        if check and rc != 0:
            raise HarnessError(f"{self.name}: `{command}` exited {rc}:\n{output}")
        return output, rc

    def run_nowait(self, command):
        """Sends COMMAND without waiting for its answer: for commands that end the boot
        (poweroff, reboot -f, echo c > /proc/sysrq-trigger), whose WK-END may never come."""
        encoded = base64.b64encode(command.encode()).decode()
        self.send_line(f"WKC {next(self._tokens)}-{secrets.token_hex(4)} {encoded}")

    def sh(self, command, timeout=COMMAND_TIMEOUT):
        """run() that must succeed; returns the output stripped."""
        return self.run(command, timeout, check=True)[0].strip()

    # ---------------------------------------------------------------- QMP
    def _connect_qmp(self, timeout=15):
        deadline = time.monotonic() + timeout
        while True:
            try:
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.connect(self.qmp_path)
                break
            except OSError:
                s.close()
                if not self._alive():
                    raise HarnessError(f"{self.name}: QEMU exited at start:\n{self.tail()}")
                if time.monotonic() > deadline:
                    raise HarnessError(f"{self.name}: no QMP socket at {self.qmp_path}")
                time.sleep(0.05)
        self._qmp_sock = s
        self._qmp_file = s.makefile("rb")
        greeting = json.loads(self._qmp_file.readline())
        if "QMP" not in greeting:
            raise HarnessError(f"unexpected QMP greeting {greeting}")
        threading.Thread(target=self._read_qmp, daemon=True).start()
        self.qmp("qmp_capabilities")

    def _read_qmp(self):
        f = self._qmp_file
        while True:
            try:
                line = f.readline()
            except (OSError, ValueError):
                line = b""
            t = time.monotonic()
            with self._cond:
                if not line:
                    self._qmp_replies["closed"] = True
                    self._cond.notify_all()
                    return
                msg = json.loads(line)
                if "event" in msg:
                    ts = msg.get("timestamp", {})
                    ev = Event(t, msg["event"], msg.get("data", {}),
                               ts.get("seconds", 0) + ts.get("microseconds", 0) / 1e6)
                    self.events.append(ev)
                    if self._events_log:
                        self._events_log.write(f"{t - self.t_start:9.3f} {ev.name} {json.dumps(ev.data)}\n")
                    if self._console_log:  # also in the console log, for one timeline
                        self._console_log.write(f"{t - self.t_start:9.3f} [QMP event] {ev.name} "
                                                f"{json.dumps(ev.data)}\n")
                elif "id" in msg:
                    self._qmp_replies[msg["id"]] = msg
                self._cond.notify_all()

    def qmp(self, execute, arguments=None, timeout=10):
        """Runs a QMP command; returns its "return" value, raises HarnessError on "error"."""
        qid = next(self._qmp_ids)
        msg = {"execute": execute, "id": qid}
        if arguments:
            msg["arguments"] = arguments
        with self._qmp_lock:
            self._qmp_sock.sendall(json.dumps(msg).encode() + b"\n")
        deadline = time.monotonic() + timeout
        with self._cond:
            while qid not in self._qmp_replies:
                left = deadline - time.monotonic()
                if self._qmp_replies.get("closed"):
                    if execute == "quit":
                        return {}
                    raise HarnessError(f"QMP closed during {execute}")
                if left <= 0:
                    raise HarnessError(f"QMP {execute}: no reply within {timeout}s")
                self._cond.wait(min(left, 0.5))
            reply = self._qmp_replies.pop(qid)
        if "error" in reply:
            raise HarnessError(f"QMP {execute}: {reply['error']}")
        return reply.get("return")

    def hmp(self, command_line):
        """A human-monitor command through QMP (e.g. "info status"); returns its text."""
        return self.qmp("human-monitor-command", {"command-line": command_line})

    def events_since(self, t=0.0, name=None):
        with self._cond:
            return [e for e in self.events if e.t >= t and (name is None or e.name == name)]

    def wait_event(self, name, timeout, since=0.0, pred=None):
        """Waits for a QMP event NAME received at host time >= SINCE (and pred(data)).

        Returns the Event. Does not require QEMU to stay alive (SHUTDOWN may be its last word)."""
        return self._wait_for_event(
            lambda n, data: n == name and (pred is None or pred(data)),
            f"QMP event {name}", timeout, since)

    def wait_guest_reset(self, timeout, since=0.0):
        """Waits for the board to reset because of the guest (watchdog, reboot -f, panic).

        Without -no-reboot QEMU resets in place and reports RESET {"guest": true,
        "reason": "guest-reset"}, with no SHUTDOWN event; with -no-reboot it reports
        SHUTDOWN {"reason": "guest-reset"} and exits. Either one is accepted. A watchdog
        device that acts itself (i6300esb) sends WATCHDOG first: see wait_event("WATCHDOG")."""
        def is_guest_reset(name, data):
            return ((name == "RESET" and data.get("guest")) or
                    (name == "SHUTDOWN" and data.get("reason") == "guest-reset"))
        # a clean power-off or a host quit will never turn into a reset
        return self._wait_for_event(is_guest_reset, "guest reset", timeout, since,
                                    hopeless=lambda n, data: n == "SHUTDOWN")

    def _wait_for_event(self, match, what, timeout, since, hopeless=None):
        """The first event at host time >= SINCE for which match(name, data) holds; fails
        at TIMEOUT, or at once on an event for which hopeless(name, data) holds instead."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for e in self.events:
                    if e.t >= since and match(e.name, e.data):
                        return e
                for e in self.events:
                    if hopeless and e.t >= since and hopeless(e.name, e.data):
                        raise HarnessError(f"{self.name}: {e.name} {e.data} instead of a {what}")
                left = deadline - time.monotonic()
                if left <= 0:
                    got = [(round(e.t - self.t_start, 3), e.name, e.data) for e in self.events if e.t >= since]
                    raise HarnessError(f"{self.name}: no {what} within {timeout}s "
                                       f"(events since: {got}); console tail:\n{self.tail()}")
                self._cond.wait(min(left, 0.5))

    # ---------------------------------------------------------------- GPIO (host side)
    def read_phys_u32(self, addr):
        """Reads a 32-bit word of guest physical memory/MMIO via HMP `xp` (no guest help)."""
        out = self.hmp(f"xp /1wx {addr:#x}")
        m = re.search(r":\s*0x([0-9a-fA-F]+)", out)
        if not m:
            raise HarnessError(f"unexpected xp output {out!r}")
        return int(m.group(1), 16)

    def gpio_sample(self):
        """(data, direction) registers of the virt board's PL061, with the host time read."""
        t = time.monotonic()
        return self.read_phys_u32(PL061_DATA), self.read_phys_u32(PL061_DIR), t

    def gpio_level(self, line):
        """Level (0/1) of PL061 line LINE as the host sees it."""
        return (self.read_phys_u32(PL061_DATA) >> line) & 1

    def gpio_is_output(self, line):
        return bool((self.read_phys_u32(PL061_DIR) >> line) & 1)

    def wait_gpio_level(self, line, level, timeout=5.0, interval=0.02):
        """Polls line LINE until it reads LEVEL; returns the host time it was first seen."""
        deadline = time.monotonic() + timeout
        while True:
            t = time.monotonic()
            if self.gpio_level(line) == level:
                return t
            if t > deadline:
                raise HarnessError(f"{self.name}: GPIO line {line} not {level} within {timeout}s")
            time.sleep(interval)

    # ---------------------------------------------------------------- guest-side helpers
    def gpio_sysfs_base(self, label=PL061_LABEL):
        """sysfs number of line 0 of the chip LABEL (dynamic: 504 on arm64, 2040 on armmp 6.1)."""
        for b in self.boots[-1].markers if self.boots else []:
            m = re.match(r"WK-GPIO chip=\S+ label=(\S+) base=(\d+)", b)
            if m and m.group(1) == label:
                return int(m.group(2))
        raise HarnessError(f"{self.name}: no WK-GPIO marker for {label}")
