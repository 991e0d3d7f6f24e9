"""The watchkeeper appliance on top of qemu_harness: build it, boot it, read its LED.

Shared by board/qemu/demo.py (what `board/run` narrates) and tests/system/scenarios.py.
python3 stdlib, and python3-jsonschema to check each `status --json` against
docs/status.schema.json (board/host-setup.sh installs it; imported only then).

    from appliance import build_binary, build_appliance, new_disk, Appliance
    build_binary("aarch64")
    initrd = build_appliance("aarch64", workdir)
    with Appliance("aarch64", initrd, new_disk(workdir + "/disk.img"), workdir) as a:
        a.wait_agent()
        a.status()                        # `watchkeeper status --json`, parsed
        a.led.pulses(t0, t1)              # LED on-intervals seen from the host
"""
import bisect
import itertools
import json
import os
import re
import socket
import statistics
import subprocess
import threading
import time

from qemu_harness import BOARD_DIR, REPO, Guest, HarnessError, PL061_DATA

# board -> (rust target triple, Debian architecture of the kernel)
TARGETS = {
    "aarch64": ("aarch64-unknown-linux-musl", "arm64"),
    "armv7": ("armv7-unknown-linux-gnueabihf", "armhf"),
}
LED_LINE = 4  # the board profiles' [led] line (PL061 line 4)

# Kernel command line of every appliance boot: the kernel's defaults, printk_devkmsg=ratelimit
# included (10 lines per 5 s per open /dev/kmsg); the agent opens it per line so that none
# of its lines is dropped, and the scenarios check the kernel log as a technician would.
BASE_APPEND = ""

# The LED table of the README, in milliseconds: (on, off between blinks, pause).
LED_TIMING = {
    "healthy": (100, 0, 2900),
    "fault": (50, 0, 50),
    "component": (200, 300, 1500),
    "hold": (1000, 0, 1000),
}


def binary_path(board):
    return os.path.join(REPO, "target", TARGETS[board][0], "release", "watchkeeper")


def build_binary(board, quiet=True):
    """cargo build --release for the board's target; returns the binary's path."""
    triple = TARGETS[board][0]
    out = subprocess.run(["cargo", "build", "--release", "--target", triple], cwd=REPO,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
    if out.returncode != 0:
        raise HarnessError(f"cargo build --release --target {triple} failed:\n{out.stdout}")
    if not quiet:
        print(out.stdout.strip().splitlines()[-1] if out.stdout.strip() else "", flush=True)
    return binary_path(board)


def build_appliance(board, workdir, config=None, configs_dir=None, name=None, adds=()):
    """board/qemu/build-appliance.sh: the initramfs with agent, config and components, and
    ADDS, (host path, guest path) pairs."""
    os.makedirs(workdir, exist_ok=True)
    out = os.path.join(workdir, name or f"{board}-appliance.cpio.gz")
    cmd = [os.path.join(BOARD_DIR, "qemu", "build-appliance.sh"), board, out]
    if config:
        cmd += ["--config", config]
    if configs_dir:
        cmd += ["--configs", configs_dir]
    for src, dest in adds:
        cmd += ["--add", f"{src}:{dest}"]
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
    if r.returncode != 0:
        raise HarnessError(f"{' '.join(cmd)} failed:\n{r.stdout}")
    return out


def new_disk(path, size="32M"):
    """A fresh, empty persistent disk (ext4) for one guest."""
    r = subprocess.run([os.path.join(BOARD_DIR, "qemu", "mkdisk.sh"), path, size],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
    if r.returncode != 0:
        raise HarnessError(f"mkdisk.sh {path} failed:\n{r.stdout}")
    return path


# ------------------------------------------------------------------------------- the LED
class LedSampler:
    """Samples the LED line from the host (QMP `xp` of the PL061 data register), in a thread.

    Keeps every level change as (host time, level), and every sample as (t_req, t_resp,
    level, stall) for led_decode (when the register was asked for, when the answer came, and
    how long QEMU's threads waited for a host CPU since the previous sample): a busy host
    shows as gaps between samples and as stalls of the guest, and the decoder uses them to
    tell a reading it can trust from one it cannot. The guest is not involved: this is what
    a technician would see. `on_change(t, level)` is called from the sampling thread."""

    def __init__(self, guest, line=LED_LINE, interval=0.01, on_change=None):
        self.g, self.line, self.interval, self.on_change = guest, line, interval, on_change
        self.changes = []  # (t, level), first entry = first sample
        self.stream = []  # (t_req, t_resp, level, stall) per sample
        self.samples = 0
        self.errors = 0
        self.last_t = None
        self._vcpu = None  # (tid, its run-queue wait so far in ns): QEMU's busiest thread
        self._sock = self._file = None  # the sampler's own QMP connection
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"led-{guest.name}")

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        self._thread.join(5)

    def _stall(self):
        """How much longer QEMU's vCPU thread waited for a host CPU since the last call (s).

        /proc/PID/task/TID/schedstat: time on CPU, time waiting on a run queue (ns), slices.
        The vCPU thread is the one with the most CPU time (TCG runs the guest in it); its
        wait is how late a busy host made the guest. 0.0 where the kernel does not say."""
        pid = self.g.proc.pid if self.g.proc else None
        best = None
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            return 0.0
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    run, wait = (int(x) for x in f.read().split()[:2])
            except (OSError, ValueError):
                continue
            if best is None or run > best[1]:
                best = (tid, run, wait)
        if best is None:
            return 0.0
        prev, self._vcpu = self._vcpu, (best[0], best[2])
        if prev is None or prev[0] != best[0]:
            return 0.0
        return (best[2] - prev[1]) / 1e9

    def _connect(self, timeout=15):
        """The sampler's own QMP socket (Appliance adds it): no lock or reader thread shared
        with the scenario's QMP commands between a read and its answer."""
        deadline = time.monotonic() + timeout
        while not self._stop.is_set():
            try:
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.connect(self.g.led_qmp_path)
                break
            except OSError:
                s.close()
                if time.monotonic() > deadline or not self.g._alive():
                    return False
                time.sleep(0.05)
        else:
            return False
        self._sock, self._file = s, s.makefile("rb")
        self._file.readline()  # greeting
        self._call({"execute": "qmp_capabilities"})
        return True

    def _call(self, msg):
        self._sock.sendall(json.dumps(msg).encode() + b"\n")
        while True:
            line = self._file.readline()
            if not line:
                raise HarnessError("LED QMP socket closed")
            reply = json.loads(line)
            if "event" not in reply:  # events go to every QMP monitor: not ours to handle
                if "error" in reply:
                    raise HarnessError(f"LED QMP: {reply['error']}")
                return reply.get("return")

    def _read(self):
        if self._sock is None:
            return self.g.read_phys_u32(PL061_DATA)
        out = self._call({"execute": "human-monitor-command",
                          "arguments": {"command-line": f"xp /1wx {PL061_DATA:#x}"}})
        m = re.search(r":\s*0x([0-9a-fA-F]+)", out or "")
        if not m:
            raise HarnessError(f"unexpected xp output {out!r}")
        return int(m.group(1), 16)

    def _run(self):
        bit = 1 << self.line
        try:  # a busy host delays this thread first: ask for a larger share (root only)
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), -10)
        except OSError:
            pass
        if getattr(self.g, "led_qmp_path", None) and not self._connect():
            self._sock = None
        while not self._stop.is_set():
            t_req = time.monotonic()
            try:
                data = self._read()
            except (HarnessError, OSError, ValueError):
                self.errors += 1
                if not self.g._alive():
                    return
                time.sleep(0.05)
                continue
            t = time.monotonic()
            stall = self._stall()
            level = 1 if data & bit else 0
            with self._lock:
                self.samples += 1
                self.last_t = t
                self.stream.append((t_req, t, level, stall))
                changed = not self.changes or self.changes[-1][1] != level
                if changed:
                    self.changes.append((t, level))
            if changed and self.on_change:
                self.on_change(t, level)
            self._stop.wait(self.interval)
        if self._sock:
            self._sock.close()

    def window(self, t0, t1):
        """The samples for led_decode.decode(T0, T1): those in the window and one before."""
        with self._lock:
            i = bisect.bisect_left(self.stream, (t0,))
            j = bisect.bisect_right(self.stream, (t1, float("inf")))
            return self.stream[max(0, i - 1):j + 1]

    def save(self, path):
        """Writes the sample stream (t_req t_resp level stall, one per line) for a post-mortem."""
        with self._lock:
            rows = list(self.stream)
        with open(path, "w") as f:
            for r in rows:
                f.write(f"{r[0]:.6f} {r[1]:.6f} {r[2]} {r[3]:.6f}\n")

    def level(self):
        with self._lock:
            return self.changes[-1][1] if self.changes else None

    def level_at(self, t):
        with self._lock:
            lv = None
            for tc, l in self.changes:
                if tc > t:
                    break
                lv = l
            return lv

    def pulses(self, t0, t1=None):
        """On-intervals (start, end) that begin and end within [t0, t1] (host times)."""
        t1 = t1 if t1 is not None else time.monotonic()
        with self._lock:
            ch = list(self.changes)
        out, start = [], None
        for t, lv in ch:
            if t < t0:
                continue
            if t > t1:
                break
            if lv == 1:
                start = t
            elif start is not None:
                out.append((start, t))
                start = None
        return out

    def on_fraction(self, t0, t1):
        """Fraction of [t0, t1] the LED was on."""
        with self._lock:
            ch = list(self.changes)
        on, lv, last = 0.0, 0, t0
        for t, l in ch:
            if t <= t0:
                lv = l
                continue
            if t >= t1:
                break
            if lv:
                on += t - last
            lv, last = l, t
        if lv:
            on += t1 - last
        return on / (t1 - t0) if t1 > t0 else 0.0

    def wait_pulses(self, n, t0, timeout):
        """Waits until N complete pulses were seen after T0; returns them."""
        deadline = time.monotonic() + timeout
        while True:
            p = self.pulses(t0)
            if len(p) >= n:
                return p
            if time.monotonic() > deadline:
                return p
            time.sleep(0.05)


def ms(x):
    return round(x * 1000)


def led_groups(pulses, gap=1.0):
    """Splits pulses into blink groups: pulses closer than GAP seconds belong together."""
    groups = []
    for p in pulses:
        if groups and p[0] - groups[-1][-1][1] < gap:
            groups[-1].append(p)
        else:
            groups.append([p])
    return groups


def classify_led(pulses, t0=None, t1=None, sampler=None):
    """Names the pattern shown by PULSES (list of (start, end)).

    Returns a dict: kind ("healthy", "fault", "component", "hold", "solid", "dark", "?"),
    k (blinks per group for "component"), on_ms (median), period_ms (median start-to-start,
    or group start-to-start for "component"), n (pulses), text (one human line)."""
    res = {"kind": "?", "k": None, "on_ms": None, "period_ms": None, "n": len(pulses)}
    if not pulses:
        if sampler is not None and t0 is not None and t1 is not None:
            frac = sampler.on_fraction(t0, t1)
            res["kind"] = "solid" if frac > 0.98 else "dark" if frac < 0.02 else "?"
            res["text"] = f"{res['kind']} ({frac:.0%} on over {t1 - t0:.1f} s)"
        else:
            res["text"] = "no pulse"
        return res
    ons = [e - s for s, e in pulses]
    on = statistics.median(ons)
    starts = [s for s, _ in pulses]
    periods = [b - a for a, b in itertools.pairwise(starts)]
    res["on_ms"] = ms(on)
    res["on_range_ms"] = (ms(min(ons)), ms(max(ons)))
    if periods:
        res["period_ms"] = ms(statistics.median(periods))
        res["period_range_ms"] = (ms(min(periods)), ms(max(periods)))
    if 0.07 <= on <= 0.14 and (not periods or 2.7 <= statistics.median(periods) <= 3.3):
        res["kind"] = "healthy"
    elif 0.02 <= on <= 0.08 and (not periods or 0.07 <= statistics.median(periods) <= 0.14):
        res["kind"] = "fault"
    elif 0.85 <= on <= 1.15 and (not periods or 1.8 <= statistics.median(periods) <= 2.2):
        res["kind"] = "hold"
    elif 0.16 <= on <= 0.25:
        groups = led_groups(pulses)
        # only whole groups count: the first may be cut by the window start
        sizes = [len(g) for g in groups]
        res["kind"] = "component"
        res["groups"] = sizes
        full = sizes[1:] if len(sizes) > 1 else sizes
        res["k"] = max(set(full), key=full.count)
        gstarts = [g[0][0] for g in groups]
        gp = [b - a for a, b in itertools.pairwise(gstarts)]
        res["period_ms"] = ms(statistics.median(gp)) if gp else None
    rng = ""
    if res.get("on_range_ms"):
        rng = f" on {res['on_ms']} ms [{res['on_range_ms'][0]}-{res['on_range_ms'][1]}]"
    per = f", period {res['period_ms']} ms" if res["period_ms"] else ""
    if res.get("period_range_ms") and res["kind"] != "component":
        per += f" [{res['period_range_ms'][0]}-{res['period_range_ms'][1]}]"
    kind = f"component {res['k']} ({res['k']} blinks per group, groups {res.get('groups')})" \
        if res["kind"] == "component" else res["kind"]
    res["text"] = f"{kind}: {len(pulses)} pulses,{rng}{per}"
    return res


# ------------------------------------------------------------------------------- the guest
KERNEL_LINE = re.compile(r"^\[\s*\d+\.\d+\] ")  # a kernel console message on the serial line

STATUS_SCHEMA = os.path.join(REPO, "docs", "status.schema.json")
_status_validator = None


class NonconformingStatus(Exception):
    """`watchkeeper status --json` printed a document that does not conform to
    docs/status.schema.json. Not a HarnessError: the polling loops take those for a guest
    that does not answer yet and ask again, which would hide it until a timeout."""


def check_status_schema(doc, where=""):
    """Raises NonconformingStatus, naming each error and showing DOC, unless DOC (a parsed
    `status --json`) conforms to docs/status.schema.json."""
    global _status_validator
    if _status_validator is None:
        try:
            import jsonschema  # noqa: PLC0415 - the scripts must parse and import without it
        except ImportError as e:
            raise ImportError("checking `status --json` needs Python's jsonschema module "
                              "(Debian's python3-jsonschema; board/host-setup.sh installs it)") from e
        with open(STATUS_SCHEMA) as f:
            _status_validator = jsonschema.Draft202012Validator(json.load(f))
    errors = sorted({(f"/{'/'.join(str(p) for p in e.absolute_path)}", e.message)
                     for e in _status_validator.iter_errors(doc)})
    if errors:
        said = "\n".join(f"  at {at}: {message}" for at, message in errors[:10])
        raise NonconformingStatus(f"{where}status --json does not conform to {STATUS_SCHEMA}:\n{said}\n"
                                  f"the document: {json.dumps(doc)}")


class Appliance(Guest):
    """A Guest running the watchkeeper appliance, with its LED sampled from the host
    (led_interval=None: no sampling, for guests whose LED nobody watches)."""

    def __init__(self, board, initrd, disk, workdir, append="", name=None, echo=False,
                 led_interval=0.01, on_led_change=None, **kw):
        append = f"{BASE_APPEND} {append}".strip()
        super().__init__(board, initrd, disk=disk, workdir=workdir, append=append, name=name,
                         echo=echo, **kw)
        self.led = None
        if led_interval is not None:
            self.led_qmp_path = os.path.join(self._sockdir, "led.sock")
            self.extra_qemu_args += ["-qmp", f"unix:{self.led_qmp_path},server=on,wait=off"]
            self.led = LedSampler(self, interval=led_interval, on_change=on_led_change)

    def start(self):
        super().start()
        self._renice()
        if self.led:
            self.led.start()
        return self

    # QEMU's threads get a larger share of a busy host than a compiler's (root only; else as
    # is): the emulated board stands for a board with a CPU of its own, and a guest that gets
    # a tenth of a host core misses its own watchdog (seen at load 20 on 2 cores).
    QEMU_NICE = -5

    def _renice(self):
        try:
            for tid in os.listdir(f"/proc/{self.proc.pid}/task"):
                os.setpriority(os.PRIO_PROCESS, int(tid), self.QEMU_NICE)
        except OSError:
            pass

    def close(self, timeout=10):
        if self.led:
            self.led.stop()
            self.led.save(os.path.join(self.workdir, f"{self.name}-led-samples.txt"))
        super().close(timeout)

    def run(self, command, timeout=Guest.COMMAND_TIMEOUT, check=False, raw=False):
        """Guest.run, without the kernel's console messages (crit and worse, e.g. "watchdog
        did not stop!"), which the serial line carries between the command's output lines.
        raw=True keeps them (for commands that print kernel log lines themselves: dmesg)."""
        out, rc = super().run(command, timeout=timeout, check=False)
        if not raw:
            out = "\n".join(l for l in out.split("\n") if not KERNEL_LINE.match(l))
        if check and rc != 0:
            raise HarnessError(f"{self.name}: `{command}` exited {rc}:\n{out}")
        return out, rc

    # -- the agent
    def status(self, timeout=60, tries=3):
        """`watchkeeper status --json`, parsed (raises if it does not parse, and
        NonconformingStatus if it does not conform to docs/status.schema.json).

        The serial console also carries the kernel's own console messages (crit and worse,
        e.g. "watchdog did not stop!"); they are dropped from the output, and the command
        is repeated if one was printed into the middle of the JSON line."""
        for i in range(tries):
            out, rc = self.run("watchkeeper status --json 2>/dev/null", timeout=timeout)
            text = "\n".join(l for l in out.splitlines() if not KERNEL_LINE.match(l))
            try:
                doc = json.loads(text)
            except ValueError as e:
                if i == tries - 1:
                    raise HarnessError(f"{self.name}: status --json did not parse ({e}), rc {rc}:\n{out}") from None
                continue
            check_status_schema(doc, f"{self.name}: ")
            return doc

    def status_text(self):
        return self.run("watchkeeper status 2>&1")[0]

    def agent_pid(self):
        out = self.run("pidof watchkeeper")[0].split()
        return [int(p) for p in out if p.isdigit()]

    def klog(self, grep="watchkeeper"):
        """Kernel log lines (dmesg) containing GREP, as (seconds since boot, text)."""
        out, _ = self.run(f"dmesg | grep -F -- '{grep}'", raw=True)
        res = []
        for line in out.splitlines():
            m = re.match(r"^\[\s*(\d+\.\d+)\]\s?(.*)$", line)
            if m:
                res.append((float(m.group(1)), m.group(2)))
        return res

    def mark(self, text):
        """Writes a marker line to the kernel log; returns its timestamp (s since boot)."""
        out, _ = self.run(f"echo 'wk-test: {text}' >/dev/kmsg; dmesg | grep -F 'wk-test: {text}' | tail -n 1",
                          raw=True)
        m = re.match(r"^\[\s*(\d+\.\d+)\]", out)
        return float(m.group(1)) if m else None

    def uptime(self):
        return float(self.sh("cut -d' ' -f1 /proc/uptime"))

    def wait_agent(self, timeout=30):
        """Waits until `watchkeeper status --json` shows the agent running; returns the status."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                s = self.status()
                if s.get("agent", {}).get("running"):
                    return s
            except HarnessError:
                if time.monotonic() > deadline:
                    out, rc = self.run("command -v watchkeeper; pidof watchkeeper; "
                                       "dmesg | grep watchkeeper | tail -n 5")
                    raise HarnessError(f"{self.name}: no running watchkeeper after {timeout}s "
                                       f"(`watchkeeper status --json` does not answer); guest says:\n{out}") from None
            if time.monotonic() > deadline:
                raise HarnessError(f"{self.name}: agent not running after {timeout}s")
            time.sleep(0.3)

    def wait_status(self, pred, timeout, interval=0.2, what="condition"):
        """Polls the status until pred(status) is true; returns (host time, status)."""
        deadline = time.monotonic() + timeout
        last = None
        while True:
            last = self.status()
            t = time.monotonic()
            if pred(last):
                return t, last
            if t > deadline:
                raise HarnessError(f"{self.name}: {what} not reached within {timeout}s; "
                                   f"last status: {json.dumps(last)}")
            time.sleep(interval)

    def wait_guest(self, command, timeout, interval=0.1, what=None):
        """Polls COMMAND in the guest until it exits 0; returns the host time it did."""
        deadline = time.monotonic() + timeout
        while True:
            _, rc = self.run(command)
            t = time.monotonic()
            if rc == 0:
                return t
            if t > deadline:
                raise HarnessError(f"{self.name}: {what or command} not true within {timeout}s")
            time.sleep(interval)


def component(status, name):
    for c in status.get("components", []):
        if c.get("name") == name:
            return c
    return None


def all_alive(status):
    comps = status.get("components", [])
    return bool(comps) and all(c.get("state") == "alive" for c in comps) and not status.get("problems")
