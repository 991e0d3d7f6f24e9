#!/usr/bin/env python3
"""The peer benchmark: watchkeeper beside Debian's Linux watchdog daemon and BusyBox's
`watchdog` applet, on the same aarch64 virtual appliance, in one run. Numbers, not pass/fail.

    tests/bench-peers [--runs N] [--window S] [--step-runs N] [--kills N] [--only PEER,...]
                      [--parts PART,...] [--write]

Every peer gets the same job: heartbeat files touched every second by a toucher, a 10 s
limit on each, the i6300esb watchdog with a 10 s timeout. When a file goes stale the board
must reset. The peers, as shipped:
  watchkeeper  the static aarch64 binary of this tree; `reset_after = "0s"`, so a stale
               heartbeat stops the feed at once and the hardware resets the board. Its
               cadences are its defaults: a feed every quarter of the hardware timeout
               (2.5 s), the safety net every 1 s (it wakes at deadlines and on events).
  daemon       Debian's `watchdog` 5.16 with its libraries (tests/system/fetch-debian-files.sh);
               `interval = 1` (a check and a feed each second), `file =` + `change = 10`,
               `retry-timeout = 0` (else it waits 60 s more), no repair binary: it shuts
               the system down and reboots.
  busybox      BusyBox's applet feeds but checks nothing, so tests/system/peers/busybox-heartbeat
               adds the check in sh, as a builder with only BusyBox would.
All three log to the kernel log (the daemon through busybox syslogd). The guest prints
every kernel log line on the serial console, so the host reads the guest's own timestamps.

Figures (medians, with the range of the runs):
  detection  last heartbeat -> the peer's decision line in the kernel log, minus the limit
  reset      last heartbeat -> the watchdog device fires (QEMU's WATCHDOG event) or, for a
             reboot the guest asks for, QEMU's RESET event (host clock)
  cost       CPU (the scheduler's run time of /proc/PID/schedstat, plus the reaped children's
             cutime+cstime of /proc/PID/stat) per hour of healthy supervision, and VmRSS and
             VmHWM (/proc/PID/status), per fixed window; watchkeeper also with no component
             (feeding alone, the floor under its rows)
  startup    exec of the peer -> the driver's first ping, from a function trace of the
             i6300esb driver (tracefs), one sample per boot (at least --runs boots)
  size       the files the peer needs on the image
  clock      `date -s` one day forward / back while healthy (false decisions and resets)
             and right after the last heartbeat (is the reset missed or moved?)
  SIGTERM, kill -9   does the watchdog stay armed (sysfs state), and when the board resets
  kill -9 of a component   watchkeeper only: `kill -9` of a pidfile component -> its
             "component pc is dead" line, guest kernel-log timestamps (a marker written to
             /dev/kmsg right before the kill), --kills times: median, p90, max and the
             distribution. A boot of its own, with one more component in the config ("pc",
             non-critical, pidfile /run/pc.pid), respawned by the host after each death.

--parts runs only some of the parts (cost, startup, death, steps, signals, kill9); the
table says "not measured" for the others and --write is refused.
"""
import argparse
import datetime
import json
import math
import os
import platform
import random
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from appliance import Appliance, binary_path  # noqa: E402
from qemu_harness import BOARD_DIR, REPO, GuestRebooted, HarnessError  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
PEER_DIR = os.path.join(HERE, "peers")
LIMIT = 10  # heartbeat limit, seconds
HW_TIMEOUT = 10  # hardware watchdog timeout, seconds
DAY = 86400
USER_HZ = 100  # the unit of /proc/PID/stat times (here the reaped children's) on every Linux ARM kernel
TRACE = "/sys/kernel/tracing"
# watchkeeper's cadences in the bench, the only place they are set (the table's command line
# shows them): its defaults, a feed every quarter of the hardware timeout and a 1 s safety
# net. It polls nothing alive (it wakes at deadlines and on events), so unlike the daemon's
# `interval = 1` and the busybox loop these are not how often it checks a heartbeat.
WK_FEED_INTERVAL = "2500ms"
WK_CHECK_INTERVAL = "1s"

PEERS = ("watchkeeper", "daemon", "busybox")
# the parts of a run (--parts): what each guest measures
PARTS = ("cost", "startup", "death", "steps", "signals", "kill9")
TITLE = {
    "watchkeeper": "watchkeeper",
    "daemon": "Linux watchdog daemon",
    "busybox": "BusyBox watchdog + sh check",
}
# The peer's log line that says a heartbeat is stale (kernel log, on the console).
DECISION = {
    "watchkeeper": re.compile(r"component hb1 is dead"),
    "daemon": re.compile(r"was not changed in"),
    "busybox": re.compile(r"busybox-heartbeat: \S+ unchanged"),
}
KMSG = re.compile(r"^\[\s*(\d+\.\d+)\]\s?(.*)$")
BEAT_MARK = "wk-bench: last beat"
# "watchdog-113 [000] ..... 2.297051: esb_timer_keepalive <-__watchdog_ping"
TRACE_LINE = re.compile(r"\s(\d+\.\d+): (\S+)")


# ------------------------------------------------------------------------------ the image
def watchkeeper_config(hearts, kill9=False):
    comps = "".join(f'\n[[component]]\nname = "hb{i}"\nheartbeat = "/run/hb/{i}"\n'
                    for i in range(1, hearts + 1))
    if kill9:
        comps += KILL9_COMPONENT
    return f"""# peer benchmark: {hearts} heartbeat file(s), {LIMIT} s limit, reset as soon as one is stale
[watchdog]
device = "/dev/watchdog"
timeout = {HW_TIMEOUT}
feed_interval = "{WK_FEED_INTERVAL}"

[agent]
check_interval = "{WK_CHECK_INTERVAL}"
log = "kmsg"

[defaults]
timeout = "{LIMIT}s"
reset_after = "0s"
{comps}"""


# The kill -9 part's extra component (its own image: the other parts' config is unchanged).
# Non-critical: its deaths never reset the board; no repair: the host respawns it. Its grace
# covers the time from the agent's start to the host starting it.
KILL9 = "pc"
KILL9_COMPONENT = f"""
[[component]]
name = "{KILL9}"
heartbeat = "/run/{KILL9}.beat"
pidfile = "/run/{KILL9}.pid"
critical = false
grace = "10m"
"""


def daemon_config(hearts):
    files = "".join(f"file = /run/hb/{i}\nchange = {LIMIT}\n" for i in range(1, hearts + 1))
    return f"""# peer benchmark: {hearts} heartbeat file(s), {LIMIT} s limit
watchdog-device = /dev/watchdog
watchdog-timeout = {HW_TIMEOUT}
interval = 1
# act on the first failed check (the default, 60, lets an error persist 60 s more)
retry-timeout = 0
realtime = yes
priority = 1
admin =
log-dir = /run/log/watchdog
{files}"""


def shell_vars(command):
    out = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True).stdout
    return {k: v for k, v in (shlex.split(l)[0].split("=", 1) for l in out.splitlines() if "=" in l)}


def build_image(workdir, hearts_counts, kill9=False):
    """The benchmark's initramfs: the stock appliance plus all three peers and their configs.
    KILL9: watchkeeper's configs hold the kill -9 part's pidfile component too."""
    daemon = shell_vars([os.path.join(os.path.dirname(PEER_DIR), "fetch-debian-files.sh"), "arm64",
                         "watchdog-daemon", "watchdog", "libc6", "--", "/usr/sbin/watchdog"])
    tag = "-kill9" if kill9 else ""
    conf = os.path.join(workdir, f"peers-conf{tag}")
    os.makedirs(conf, exist_ok=True)
    for n in hearts_counts:
        with open(os.path.join(conf, f"watchkeeper-{n}.toml"), "w") as f:
            f.write(watchkeeper_config(n, kill9))
        with open(os.path.join(conf, f"daemon-{n}.conf"), "w") as f:
            f.write(daemon_config(n))
    adds = [
        (binary_path("aarch64"), "/usr/sbin/watchkeeper"),
        (os.path.join(PEER_DIR, "start"), "/etc/wk/autostart.d/50-peer"),
        (os.path.join(PEER_DIR, "busybox-heartbeat"), "/usr/sbin/busybox-heartbeat"),
        (conf, "/etc/peers"),
    ]
    daemon_files = daemon["WK_FILES"].split()
    adds += [(daemon["WK_ROOT"] + f, f) for f in daemon_files]
    initrd = os.path.join(workdir, f"peers{tag}.cpio.gz")
    cmd = [os.path.join(BOARD_DIR, "qemu", "build-initramfs.sh"), "arm64", initrd]
    for src, dest in adds:
        cmd += ["--add", f"{src}:{dest}"]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    kernel = shell_vars([os.path.join(BOARD_DIR, "qemu", "fetch-kernel.sh"), "arm64"])
    sizes = {
        "watchkeeper": [("watchkeeper (static)", os.path.getsize(binary_path("aarch64")))],
        "daemon": [(os.path.basename(f), os.path.getsize(daemon["WK_ROOT"] + f))
                   for f in daemon_files],
        "busybox": [("busybox (static, all applets)", os.path.getsize(kernel["WK_BUSYBOX"])),
                    ("busybox-heartbeat", os.path.getsize(os.path.join(PEER_DIR, "busybox-heartbeat")))],
    }
    versions = {
        "daemon": daemon["WK_VERSION_watchdog"],
        "libc": daemon["WK_VERSION_libc6"],
        "busybox": kernel["WK_BUSYBOX_VERSION"],
        "kernel": kernel["WK_KERNEL_RELEASE"],
    }
    return initrd, sizes, versions


# ------------------------------------------------------------------------------ one guest
class PeerGuest(Appliance):
    """The appliance booted with one peer; every kernel log line goes to the console."""

    def __init__(self, peer, hearts, initrd, workdir):
        super().__init__("aarch64", initrd, None, workdir, name=f"{peer}-{hearts}", led_interval=None,
                         append=f"wk.peer={peer} wk.hearts={hearts} wk.nodisk wk.loglevel=8 printk.devkmsg=on")
        self.peer = peer
        self.startups = []  # (exec -> open, exec -> first ping) in ms, one per boot

    def up(self, timeout=90):
        """Waits for the next boot's control shell and the peer's first feed; records its
        startup. Called once per boot: after the first start and after every reset."""
        self.wait_ready(boot=len(self.startups) + 1, timeout=timeout)
        deadline = time.monotonic() + 30
        while True:
            trace = self.run(f"cat {TRACE}/trace", raw=True)[0]
            s = startup_from_trace(trace)
            if s:
                break
            if time.monotonic() > deadline:
                raise HarnessError(f"{self.name}: no feed traced 30 s after boot; trace:\n{trace[-2000:]}\n"
                                   f"peer log:\n{self.run('cat /run/log/50-peer.log')[0]}")
            time.sleep(0.5)
        self.sh(f"echo nop >{TRACE}/current_tracer")  # tracing stops: the windows measure the peer alone
        self.startups.append(s)
        return s

    def pids(self):
        """The processes that make up the peer (the busybox peer is the sh loop plus the applet)."""
        files = "/run/peer.pid" + (" /run/peer-feeder.pid" if self.peer == "busybox" else "")
        return [int(p) for p in self.sh(f"cat {files}").split()]

    def cpu_seconds(self, pids):
        """CPU time of PIDS and of the children they reaped. Their own time is the scheduler's
        ns count (/proc/PID/schedstat), not /proc/PID/stat's 10 ms ticks: a 60 s window of an
        agent that runs 1 s an hour holds under two ticks."""
        total = 0.0
        for pid in pids:
            stat = self.sh(f"cat /proc/{pid}/stat")
            fields = stat.rsplit(")", 1)[1].split()
            total += (int(fields[13]) + int(fields[14])) / USER_HZ  # cutime cstime
            total += int(self.sh(f"cat /proc/{pid}/schedstat").split()[0]) / 1e9
        return total

    def memory_kib(self, pids):
        rss = hwm = 0
        for pid in pids:
            status = self.sh(f"cat /proc/{pid}/status")
            rss += int(re.search(r"VmRSS:\s+(\d+)", status).group(1))
            hwm += int(re.search(r"VmHWM:\s+(\d+)", status).group(1))
        return rss, hwm

    def kmsg_after(self, index):
        """Kernel log lines on the console from line INDEX on: (index, guest seconds, text)."""
        with self._cond:
            lines = self.lines[index:]
        out = []
        for i, (_, line) in enumerate(lines):
            m = KMSG.match(line)
            if m:
                out.append((index + i, float(m.group(1)), m.group(2)))
        return out

    def wait_kmsg(self, rx, index, timeout):
        """The first kernel log line matching RX from console line INDEX on: (index, guest s)."""
        deadline = time.monotonic() + timeout
        while True:
            for i, ts, text in self.kmsg_after(index):
                if rx.search(text):
                    return i, ts
            if time.monotonic() > deadline:
                return None
            time.sleep(0.1)

    def stop_beats(self, extra=""):
        """Kills the toucher after one last touch; returns (host time, console index)."""
        with self._cond:
            index = len(self.lines)
        t0 = time.monotonic()
        self.sh(f"kill $(cat /run/toucher.pid); touch /run/hb/*; echo '{BEAT_MARK}' >/dev/kmsg{extra}")
        t1 = time.monotonic()
        return (t0 + t1) / 2, index

    def wait_reset(self, since, timeout):
        """Host time of the board's next reset after SINCE, or None within TIMEOUT: the
        instant the i6300esb fired (QEMU's WATCHDOG event), else, for a reboot the guest
        asked for, QEMU's RESET event. RESET comes only after QEMU has reset the machine and
        reloaded its images, about 0.25 s after the device fired, so a reboot is that much
        later here than a watchdog reset."""
        try:
            ev = self.wait_guest_reset(timeout, since=since)
        except HarnessError:
            return None
        fired = [e for e in self.events_since(since, "WATCHDOG") if e.t <= ev.t]
        return fired[0].t if fired else ev.t

    def reset_then_up(self, since, timeout):
        """Seconds from host time SINCE to the board's reset, or None if the peer did not reset
        it within TIMEOUT (then the host does). Either way returns with the next boot up."""
        t_reset = self.wait_reset(since, timeout)
        if t_reset is None:
            self.force_reset()
        self.up()
        return round(t_reset - since, 2) if t_reset is not None else None

    def step_clock(self, seconds):
        self.sh(f"date -s @$(( $(date +%s) + {seconds} )) >/dev/null")

    def force_reset(self):
        """Resets the board from the host (QMP), for a guest the peer did not reset."""
        self.qmp("system_reset")


def startup_from_trace(trace):
    """(exec -> open, exec -> first ping) in ms from the start script's function trace."""
    t_exec = t_open = None
    for line in trace.splitlines():
        m = TRACE_LINE.search(line)
        if not m:
            continue
        t, what = float(m.group(1)), m.group(2)
        if what == "tracing_mark_write:" and "wk-peer: exec" in line:
            t_exec = t
        elif t_exec is not None and what == "watchdog_open" and t_open is None:
            t_open = t
        elif t_exec is not None and what == "esb_timer_keepalive":
            return (round((t_open - t_exec) * 1000, 1) if t_open else None, round((t - t_exec) * 1000, 1))
    return None


# ------------------------------------------------------------------------------ measurements
def measure_cost(g, windows, window_s, settle_s=5):
    time.sleep(settle_s)
    pids = g.pids()
    per_hour, rss, hwm = [], [], []
    for _ in range(windows):
        t0, c0 = time.monotonic(), g.cpu_seconds(pids)
        time.sleep(window_s)
        t1, c1 = time.monotonic(), g.cpu_seconds(pids)
        per_hour.append((c1 - c0) * 3600 / (t1 - t0))
        resident, peak = g.memory_kib(pids)
        rss.append(resident)
        hwm.append(peak)
    return {"cpu_s_per_h": per_hour, "rss_kib": rss, "hwm_kib": hwm, "window_s": window_s}


def measure_death(g, runs, log):
    """RUNS times: stop the beats, time the decision and the reset, wait for the next boot."""
    detection, reset = [], []
    for r in range(runs):
        t_last, index = g.stop_beats()
        mark = g.wait_kmsg(re.compile(re.escape(BEAT_MARK)), index, 10)
        decision = g.wait_kmsg(DECISION[g.peer], index, LIMIT + HW_TIMEOUT + 30)
        reset_s = g.reset_then_up(t_last, LIMIT + HW_TIMEOUT + 40)
        if mark and decision:
            detection.append(decision[1] - mark[1] - LIMIT)
        if reset_s is not None:
            reset.append(reset_s)
        decided = f"{decision[1] - mark[1]:.2f} s" if mark and decision else "not logged"
        reset_at = f"{reset_s:.2f} s" if reset_s is not None else "none"
        log(f"  death {r + 1}/{runs}: decision {decided}, reset {reset_at} after the last beat")
    return {"detection_s": detection, "reset_s": reset}


def observe(g, t0, index, seconds):
    """Waits SECONDS for a board reset after host time T0; returns (the guest times of the
    decision lines from console line INDEX on, the host time of the reset or None)."""
    t_reset = g.wait_reset(t0, seconds)
    decisions = [ts for _, ts, text in g.kmsg_after(index) if DECISION[g.peer].search(text)]
    return decisions, t_reset


def measure_steps(g, runs, log):
    res = {"healthy+1d": [], "healthy-1d": [], "dead+1d": [], "dead-1d": []}
    for r in range(runs):
        for case, step in (("healthy+1d", DAY), ("healthy-1d", -DAY)):
            with g._cond:
                index = len(g.lines)
            t0 = time.monotonic()
            g.step_clock(step)
            decisions, t_reset = observe(g, t0, index, 25)
            back = None
            if not t_reset:  # the step back to the true time is a step too: watch it as well
                t1 = time.monotonic()
                g.step_clock(-step)
                decisions, back = observe(g, t1, index, 15)  # decisions since the first step
            out = {"decisions": len(decisions), "reset": bool(t_reset or back),
                   "reset_on": "step" if t_reset else "step back" if back else None}
            res[case].append(out)
            log(f"  {case} {r + 1}/{runs}: {out['decisions']} decision line(s), "
                f"{'reset after the ' + out['reset_on'] if out['reset'] else 'no reset'}")
            if out["reset"]:
                g.up()
        for case, step in (("dead+1d", DAY), ("dead-1d", -DAY)):
            t_last, index = g.stop_beats(f"; date -s @$(( $(date +%s) + {step} )) >/dev/null")
            wait = LIMIT + HW_TIMEOUT + 20
            out = {"reset_s": g.reset_then_up(t_last, wait), "waited_s": wait}
            res[case].append(out)
            seen = f"reset {out['reset_s']} s after the last beat" if out["reset_s"] is not None \
                else f"no reset in {wait} s"
            log(f"  {case} {r + 1}/{runs}: {seen}")
    return res


def measure_signal(g, signal, log):
    """Sends SIGNAL to the peer: does it exit, is the watchdog left armed, when does it reset?"""
    pids = g.pids()
    t0 = time.monotonic()
    g.sh(f"kill -{signal} {' '.join(map(str, pids))}")
    deadline = time.monotonic() + 10
    while g.run(f"kill -0 {pids[-1]} 2>/dev/null")[1] == 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    exited = g.run(f"kill -0 {pids[-1]} 2>/dev/null")[1] != 0
    state = g.sh("cat /sys/class/watchdog/watchdog0/state")
    wait = HW_TIMEOUT + 15
    out = {"exited": exited, "state": state, "reset_s": g.reset_then_up(t0, wait), "waited_s": wait}
    seen = f"reset after {out['reset_s']} s" if out["reset_s"] is not None else f"no reset in {wait} s"
    log(f"  SIG{signal}: {'exited' if exited else 'still running'}, watchdog {state}, {seen}")
    return out


# The kill -9 part's component in the guest: one process that writes its pidfile and touches
# its heartbeat every 0.5 s, run in the foreground of a loop (which reaps it at once, so no
# zombie is left to the agent) that starts it again when the host says so (/run/pc.respawn).
KILL9_LOOP = f"""while :; do
    sh -c 'echo $$ >/run/{KILL9}.pid; while :; do touch /run/{KILL9}.beat; sleep 0.5; done'
    while [ ! -e /run/{KILL9}.respawn ]; do sleep 0.05; done
    rm -f /run/{KILL9}.respawn
done
"""
KILL_MARK = f"wk-bench: kill -9 {KILL9}"
KILL9_DEAD = re.compile(rf"component {KILL9} is dead")
KILL9_ALIVE = re.compile(rf"component {KILL9} is alive again")
# the distribution's bins, upper bounds in ms (the last bin is open)
KILL9_BINS = (10, 20, 50, 100, 250, 500, 1000)


def kill9_status(g):
    """The kill -9 component's state in `watchkeeper status --json` (the bench's config)."""
    out = g.run("watchkeeper -c /etc/peers/watchkeeper-1.toml status --json 2>/dev/null")[0]
    try:
        comps = json.loads(out.strip().splitlines()[-1])["components"]
    except (ValueError, IndexError, KeyError):
        return None
    return next((c["state"] for c in comps if c.get("name") == KILL9), None)


def measure_kill9(g, kills, log):
    """KILLS times: a marker to /dev/kmsg, `kill -9` of the pidfile component, its 'is dead'
    line; then the host respawns it and waits for 'alive again' (and a random pause, so the
    kills fall at every phase of the agent's passes). Latencies in guest kernel-log seconds."""
    g.sh(f"cat >/run/{KILL9}-loop.sh <<'EOF'\n{KILL9_LOOP}EOF\n"
         f"setsid sh /run/{KILL9}-loop.sh </dev/null >/dev/null 2>&1 &")
    deadline = time.monotonic() + 30
    while kill9_status(g) != "alive":
        if time.monotonic() > deadline:
            raise HarnessError(f"{g.name}: component {KILL9} not alive 30 s after it was started")
        time.sleep(0.2)
    rng = random.Random(kills)
    latencies, missed = [], 0
    for k in range(kills):
        with g._cond:
            index = len(g.lines)
        pid = g.sh(f"pid=$(cat /run/{KILL9}.pid); echo \"{KILL_MARK} $pid\" >/dev/kmsg; kill -9 $pid; echo $pid")
        mark = g.wait_kmsg(re.compile(re.escape(f"{KILL_MARK} {pid}")), index, 10)
        dead = g.wait_kmsg(KILL9_DEAD, index, LIMIT + 10)
        if mark and dead:
            latencies.append(dead[1] - mark[1])
            log(f"  kill -9 {k + 1}/{kills} (pid {pid}): 'is dead' {(dead[1] - mark[1]) * 1000:.1f} ms after the marker")
        else:
            missed += 1
            log(f"  kill -9 {k + 1}/{kills} (pid {pid}): {'no marker' if not mark else 'no is-dead line'} "
                f"within {LIMIT + 10} s")
        g.sh(f"touch /run/{KILL9}.respawn")
        alive = g.wait_kmsg(KILL9_ALIVE, dead[0] if dead else index, LIMIT + 10)
        if alive is None:
            raise HarnessError(f"{g.name}: {KILL9} not alive again within {LIMIT + 10} s of its respawn")
        time.sleep(rng.uniform(0.5, 1.5))
    return {"latency_s": latencies, "missed": missed, "kills": kills, "check_interval": WK_CHECK_INTERVAL,
            **kill9_summary(latencies)}


def percentile(values, q):
    """The Q-quantile (0..1) of VALUES, nearest rank."""
    xs = sorted(values)
    return xs[max(0, math.ceil(q * len(xs)) - 1)]


def kill9_summary(latencies):
    if not latencies:
        return {}
    ms_ = [x * 1000 for x in latencies]
    bins, lo = [], 0
    for hi in KILL9_BINS + (None,):
        n = sum(1 for x in ms_ if x >= lo and (hi is None or x < hi))
        bins.append([f"{lo}-{hi} ms" if hi is not None else f">={lo} ms", n])
        lo = hi
    return {"median_ms": round(statistics.median(ms_), 1), "p90_ms": round(percentile(ms_, 0.9), 1),
            "max_ms": round(max(ms_), 1), "min_ms": round(min(ms_), 1), "bins": bins}


def kill9_text(r):
    if not r or not r.get("latency_s"):
        return "not measured" if not r else f"no 'is dead' line in {r['kills']} kills"
    text = (f"median {r['median_ms']:.1f} ms, p90 {r['p90_ms']:.1f} ms, max {r['max_ms']:.1f} ms "
            f"(n={len(r['latency_s'])}; " + ", ".join(f"{b} {n}" for b, n in r["bins"] if n) + ")")
    if r["missed"]:
        text += f"; {r['missed']} kill(s) without an 'is dead' line"
    return text


def run_peer(peer, initrd, workdir, args, log):
    def say(text):
        log(f"[{peer}] {text.strip()}")

    res = {}
    parts = args.parts
    if parts & {"cost", "startup", "death", "steps", "signals"}:
        with PeerGuest(peer, 1, initrd, os.path.join(workdir, peer)) as g:
            g.up()
            say(f"up; exec -> first ping {g.startups[-1][1]} ms")
            if "cost" in parts:
                say(f"cost windows ({args.windows} x {args.window} s)")
                res["cost1"] = measure_cost(g, args.windows, args.window)
            if "death" in parts:
                res["death"] = measure_death(g, args.runs, say)
            if "steps" in parts:
                res["steps"] = measure_steps(g, args.step_runs, say)
            if "signals" in parts:
                res["sigterm"] = measure_signal(g, "TERM", say)
                res["sigkill"] = measure_signal(g, "KILL", say)
            res["startup_ms"] = g.startups
    if parts & {"cost", "startup"}:
        with PeerGuest(peer, 64, initrd, os.path.join(workdir, peer + "-64")) as g:
            g.up()
            if "cost" in parts:
                say(f"64 heartbeats: up; cost windows ({args.windows} x {args.window} s)")
                res["cost64"] = measure_cost(g, args.windows, args.window)
            while "startup" in parts and len(g.startups) < args.runs:  # more startup samples: one per boot
                g.force_reset()
                g.up()
            res["startup64_ms"] = g.startups
    if "cost" in parts and peer == "watchkeeper":
        # The floor under both CPU rows: what feeding alone costs at this feed_interval.
        with PeerGuest(peer, 0, initrd, os.path.join(workdir, peer + "-0")) as g:
            g.up()
            say(f"no component, feeding only: cost windows ({args.windows} x {args.window} s)")
            res["cost0"] = measure_cost(g, args.windows, args.window)
    if "kill9" in parts and peer == "watchkeeper":
        with PeerGuest(peer, 1, args.kill9_initrd, os.path.join(workdir, peer + "-kill9")) as g:
            g.up()
            say(f"kill -9 of the pidfile component {KILL9}: {args.kills} kills "
                f"(check_interval {WK_CHECK_INTERVAL})")
            res["kill9"] = measure_kill9(g, args.kills, say)
            say(f"kill -9 -> 'is dead': {kill9_text(res['kill9'])}")
    return res


# ------------------------------------------------------------------------------ the table
def median_range(values, fmt):
    if not values:
        return "not measured"
    text = fmt(statistics.median(values))
    if len(values) > 1 and fmt(min(values)) == fmt(max(values)):
        text += f" (all {len(values)} equal)"
    elif len(values) > 1:
        text += f" ({fmt(min(values))} to {fmt(max(values))}, n={len(values)})"
    return text


def secs(x):
    return f"{x:.2f} s"


def signed_secs(x):
    return f"{x:+.2f} s"


def cpu_text(cost):
    per_hour = cost["cpu_s_per_h"]
    return median_range(per_hour, lambda x: f"{x:.1f} s") + f", {statistics.median(per_hour) / 36:.2f} %"


def memory_text(cost):
    return " / ".join(median_range(cost[k], lambda x: f"{x:.0f} KiB") for k in ("rss_kib", "hwm_kib"))


def size_text(parts):
    total = sum(b for _, b in parts)
    detail = " + ".join(f"{name} {b}" for name, b in parts) if len(parts) > 1 else parts[0][0]
    return f"{total} B ({total // 1024} KiB: {detail})"


def healthy_step_text(runs):
    if not runs:
        return "not measured"
    resets = sum(r["reset"] for r in runs)
    decisions = sum(r["decisions"] > 0 for r in runs)
    text = f"false resets {resets}/{len(runs)}, false decisions {decisions}/{len(runs)}"
    ons = sorted({r["reset_on"] for r in runs if r["reset_on"]})
    return text + (f" (on the {' and the '.join(ons)})" if ons else "")


def dead_step_text(runs):
    if not runs:
        return "not measured"
    times = [r["reset_s"] for r in runs if r["reset_s"] is not None]
    missed = len(runs) - len(times)
    parts = []
    if times:
        parts.append(f"reset {median_range(times, secs)} after the last beat")
    if missed:
        parts.append(f"missed: no reset within {runs[0]['waited_s']} s in {missed}/{len(runs)}")
    return "; ".join(parts)


def signal_text(r):
    armed = {"active": "watchdog left armed", "inactive": "watchdog disarmed"}.get(r["state"], r["state"])
    end = f"board reset after {r['reset_s']:.2f} s" if r["reset_s"] is not None else \
        f"no reset within {r['waited_s']} s"
    return f"{'exits' if r['exited'] else 'keeps running'}, {armed}: {end}"


def render(results, sizes, versions, args, started):
    peers = [p for p in PEERS if p in results]
    title = dict(TITLE)
    title["daemon"] += f" {versions['daemon']}"
    title["busybox"] = f"BusyBox {versions['busybox'].split(':')[-1]} watchdog + sh check"
    rows = [
        ("detection: decision after the last beat, minus the 10 s limit",
         lambda r: median_range(r["death"]["detection_s"], signed_secs)),
        ("reset: board reset after the last beat", lambda r: median_range(r["death"]["reset_s"], secs)),
        ("CPU per hour, 1 heartbeat", lambda r: cpu_text(r["cost1"])),
        ("CPU per hour, 64 heartbeats", lambda r: cpu_text(r["cost64"])),
        (f"CPU per hour, no component: feeding alone, every {WK_FEED_INTERVAL}",
         lambda r: cpu_text(r["cost0"]), "watchkeeper"),
        ("VmRSS / VmHWM, 1 heartbeat", lambda r: memory_text(r["cost1"])),
        ("VmRSS / VmHWM, 64 heartbeats", lambda r: memory_text(r["cost64"])),
        ("startup: exec to first feed, 1 heartbeat",
         lambda r: median_range([s[1] for s in r["startup_ms"]], lambda x: f"{x:.1f} ms")),
        ("startup: exec to first feed, 64 heartbeats",
         lambda r: median_range([s[1] for s in r["startup64_ms"]], lambda x: f"{x:.1f} ms")),
        ("size as shipped", None),
        ("clock +1 day, healthy", lambda r: healthy_step_text(r["steps"]["healthy+1d"])),
        ("clock -1 day, healthy", lambda r: healthy_step_text(r["steps"]["healthy-1d"])),
        ("clock +1 day right after the last beat", lambda r: dead_step_text(r["steps"]["dead+1d"])),
        ("clock -1 day right after the last beat", lambda r: dead_step_text(r["steps"]["dead-1d"])),
        ("SIGTERM", lambda r: signal_text(r["sigterm"])),
        ("kill -9", lambda r: signal_text(r["sigkill"])),
        (f"kill -9 of a pidfile component -> its 'is dead' line ({args.kills} kills, guest kernel log)",
         lambda r: kill9_text(r["kill9"]), "watchkeeper"),
    ]
    out = [f"Run on {started:%Y-%m-%d}, {platform.node() or 'host'}: {platform.system()} "
           f"{platform.machine()}, {os.cpu_count()} cores; guest: QEMU virt, Cortex-A57 (TCG), "
           f"Debian kernel {versions['kernel']}, i6300esb watchdog, libc {versions['libc']} for the daemon.",
           f"Command: `tests/bench-peers --runs {args.runs} --windows {args.windows} --window {args.window} "
           f"--step-runs {args.step_runs} --kills {args.kills} --jobs {args.jobs}"
           f"{'' if args.parts == set(PARTS) else ' --parts ' + ','.join(p for p in PARTS if p in args.parts)}`"
           f" (watchkeeper's feed_interval {WK_FEED_INTERVAL}, check_interval {WK_CHECK_INTERVAL}). Ranges are min to max over n runs.", "",
           "| | " + " | ".join(title[p] for p in peers) + " |",
           "|---|" + "---|" * len(peers)]
    for name, cell, *only in rows:
        if cell is None:
            cells = [size_text(sizes[p]) for p in peers]
        else:
            cells = []
            for p in peers:
                if only and p not in only:
                    cells.append("n/a (" + " and ".join(only) + " only)")
                    continue
                try:
                    cells.append(cell(results[p]))
                except KeyError:  # a part --parts left out
                    cells.append("not measured")
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(out)


BEGIN, END = "<!-- peers:begin (tests/bench-peers --write) -->", "<!-- peers:end -->"


def write_benchmarks(table):
    path = os.path.join(REPO, "BENCHMARKS.md")
    with open(path) as f:
        text = f.read()
    block = f"{BEGIN}\n{table}\n{END}"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + block + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n## Side by side with the peers\n\n" + block + "\n"
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)
    return path


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5, help="deaths per peer (detection, reset)")
    ap.add_argument("--windows", type=int, default=3, help="CPU windows per heartbeat count")
    ap.add_argument("--window", type=int, default=60, help="seconds per CPU window")
    ap.add_argument("--step-runs", type=int, default=3, help="repeats of each clock step case")
    ap.add_argument("--kills", type=int, default=20, help="kill -9s of watchkeeper's pidfile component")
    ap.add_argument("--only", default=",".join(PEERS), help="comma-separated peers")
    ap.add_argument("--parts", default=",".join(PARTS),
                    help=f"comma-separated parts to run (default all: {','.join(PARTS)}); "
                         "cost includes the 64-heartbeat guest, startup its extra boots")
    ap.add_argument("--jobs", type=int, default=1, help="peers measured at once (1: no contention)")
    ap.add_argument("--write", action="store_true", help="put the table into BENCHMARKS.md")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (console logs)")
    args = ap.parse_args()
    peers = [p for p in args.only.split(",") if p]
    unknown = sorted(set(peers) - set(PEERS))
    if unknown:
        ap.error(f"unknown peer(s) {unknown}; choose from {', '.join(PEERS)}")
    args.parts = {p for p in args.parts.split(",") if p}
    unknown = sorted(args.parts - set(PARTS))
    if unknown or not args.parts:
        ap.error(f"unknown or no part(s) {unknown}; choose from {', '.join(PARTS)}")
    if args.write and args.parts != set(PARTS):
        ap.error("--write needs every part (the table in BENCHMARKS.md is a full run)")

    started = datetime.datetime.now()
    workdir = tempfile.mkdtemp(prefix="wk-peers-")
    initrd, sizes, versions = build_image(workdir, (0, 1, 64))
    args.kill9_initrd = None
    if "kill9" in args.parts and "watchkeeper" in peers:
        args.kill9_initrd = build_image(workdir, (1,), kill9=True)[0]

    def log(text):
        print(f"{time.monotonic() - t0:7.1f}s {text}", flush=True)

    t0 = time.monotonic()
    results, failed = {}, {}
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = {p: pool.submit(run_peer, p, initrd, workdir, args, log) for p in peers}
        for p, fut in futures.items():
            try:
                results[p] = fut.result()
            except (HarnessError, GuestRebooted, OSError, subprocess.CalledProcessError) as e:
                failed[p] = str(e)
                log(f"[{p}] FAILED: {e}")
    with open(os.path.join(workdir, "peers.json"), "w") as f:
        json.dump({"results": results, "sizes": sizes, "versions": versions, "failed": failed}, f, indent=1)
    if not results:
        print(f"bench-peers: every peer failed; logs in {workdir}", file=sys.stderr)
        return 1
    table = render(results, sizes, versions, args, started)
    print()
    print(table)
    if args.write and not failed:
        print(f"\nwritten to {write_benchmarks(table)}")
    if args.keep or failed:
        print(f"\nraw results and console logs: {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
