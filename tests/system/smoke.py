#!/usr/bin/env python3
"""Smoke test of the QEMU appliance with BusyBox only (no watchkeeper binary needed).

For each board (aarch64 with the i6300esb watchdog, armv7 with softdog) it:
  boot   boots to WK-READY with the watchdog device and the persistent disk present
  (a)    drives PL061 GPIO lines as outputs from the guest (sysfs: BusyBox has no gpioset)
         and reads each level change on the host over QMP, without the guest's help
  (c1)   writes a random marker to the persistent disk (and syncs)
  (b)    starts `busybox watchdog -T 5 -t 1`, checks it keeps the board alive past the
         timeout, kills it with SIGKILL and checks the board resets (QMP RESET
         guest-reset, plus WATCHDOG on i6300esb) within the timeout + margin
  (c2)   follows the guest into its second boot and finds the marker on the disk
  off    powers off and checks QEMU reports guest-shutdown (not guest-reset) and exits 0
Every check asserts; a failing check ends that board's run, the other board still runs.
Prints the measured numbers and "N passed, M failed"; exits non-zero on any failure.

usage: smoke.py [--board aarch64|armv7|all] [--workdir DIR] [--verbose]
"""
import argparse
import os
import secrets
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qemu_harness import REPO, Guest, HarnessError, build_images

WD_TIMEOUT = 5.0  # busybox watchdog -T
WD_FEED = 1.0  # busybox watchdog -t (feed period)
WD_MARGIN = 1.0  # allowed lateness of the reset past the timeout (TCG, loaded host)
GPIO_LINES = (0, 6)  # two free lines (3 is the virt board's power button) to show bit N = line N

BOARDS = {
    # board: (Debian arch, watchdog identity in sysfs, does QEMU emit a WATCHDOG event)
    "aarch64": ("arm64", "i6300ESB_timer", True),
    "armv7": ("armhf", "Software_Watchdog", False),  # softdog resets via the kernel: no event
}


class Results:
    def __init__(self):
        self.passed, self.failed, self.metrics = 0, 0, []

    def check(self, board, what, ok, detail=""):
        tag = "PASS" if ok else "FAIL"
        print(f"  [{tag}] {board}: {what}" + (f" ({detail})" if detail else ""), flush=True)
        if ok:
            self.passed += 1
        else:
            self.failed += 1
            raise AssertionError(f"{board}: {what} {detail}")

    def metric(self, board, name, value, unit="s"):
        self.metrics.append((board, name, value, unit))
        print(f"  [time] {board}: {name} = {value:.3f} {unit}" if unit else
              f"  [info] {board}: {name} = {value}", flush=True)


def gpio_check(g, r, board):
    base = g.gpio_sysfs_base()
    r.metric(board, "PL061 sysfs base (line N = base+N)", base, unit="")
    out, _ = g.run("command -v gpioset gpioget; ls /dev/gpiochip*")
    r.check(board, "GPIO character device present (/dev/gpiochip0)", "/dev/gpiochip0" in out, out.strip())
    # BusyBox has no GPIO applet (gpioset/gpioget come from libgpiod) and can't issue the
    # chardev ioctls, so BusyBox-only tests drive lines via sysfs (CONFIG_GPIO_SYSFS=y).
    for line in GPIO_LINES:
        n = base + line
        g.sh(f"echo {n} > /sys/class/gpio/export && echo out > /sys/class/gpio/gpio{n}/direction")
        r.check(board, f"host sees line {line} as output (PL061 DIR bit {line})", g.gpio_is_output(line))
        for level in (1, 0, 1, 0):
            data_before, _, _ = g.gpio_sample()
            t0 = time.monotonic()
            g.sh(f"echo {level} > /sys/class/gpio/gpio{n}/value")
            t_seen = g.wait_gpio_level(line, level, timeout=2.0)
            data_after, _, _ = g.gpio_sample()
            others_same = (data_before ^ data_after) & ~(1 << line) == 0
            r.check(board, f"host reads line {line} = {level} over QMP, other lines unchanged",
                    others_same, f"data {data_before:#04x} -> {data_after:#04x}, "
                    f"{(t_seen - t0) * 1000:.0f} ms from sending the command")
        g.sh(f"echo {n} > /sys/class/gpio/unexport")  # release it (a chardev user could take it)


def scenario(board, workdir, r, verbose):
    arch, wd_identity, wd_event = BOARDS[board]
    t_scn = time.monotonic()
    initrd, disk = build_images(arch, workdir)
    r.metric(board, "build initramfs + disk", time.monotonic() - t_scn)

    with Guest(board, initrd, disk=disk, workdir=workdir, echo=verbose) as g:
        print(f"  console log: {g.console_log_path}", flush=True)
        b1 = g.wait_ready(timeout=90)
        r.metric(board, "QEMU start -> /init (WK-BOOT)", b1.t_boot - g.t_start)
        r.metric(board, "QEMU start -> control shell (WK-READY)", b1.t_ready - g.t_start)
        r.check(board, "boot 1 ready, no WK-ERROR", not g.errors, str(g.errors))
        r.check(board, f"watchdog device is {wd_identity}",
                any(f"identity={wd_identity}" in m for m in b1.markers), str(b1.markers))
        r.check(board, "persistent disk mounted", "WK-DISK mounted /dev/vda /var/lib/watchkeeper" in b1.markers)
        r.metric(board, "kernel", g.sh("uname -r"), unit="")
        t0 = time.monotonic()
        for _ in range(10):
            g.sh("true")
        r.metric(board, "control-shell command round trip", (time.monotonic() - t0) / 10)

        # (a) GPIO out of the guest, read by the host
        gpio_check(g, r, board)

        # (c1) state on the persistent disk, flushed so a reset can't lose it
        marker = secrets.token_hex(8)
        g.sh(f"echo {marker} > /var/lib/watchkeeper/smoke-marker && sync")

        # (b) watchdog: fed by busybox, then the feeder is SIGKILLed (no magic close)
        g.sh(f"watchdog -T {WD_TIMEOUT:.0f} -t {WD_FEED:.0f} /dev/watchdog")  # daemonizes
        pid = g.sh("pidof watchdog")
        r.check(board, "busybox watchdog running", pid.isdigit(), pid)
        state = g.sh("cd /sys/class/watchdog/watchdog0 && echo $(cat state timeout)")
        r.check(board, f"watchdog active with timeout {WD_TIMEOUT:.0f}", state == f"active {WD_TIMEOUT:.0f}", state)
        t_hold = time.monotonic()
        time.sleep(WD_TIMEOUT + 1.5)
        alive, _ = g.run("echo alive")
        r.check(board, f"fed watchdog keeps the board up past {WD_TIMEOUT:.0f} s",
                alive.strip() == "alive" and not g.events_since(t_hold) and len(g.boots) == 1)

        t_send = time.monotonic()
        g.sh(f"kill -9 {pid}")
        t_ack = time.monotonic()  # the kill happened between t_send and t_ack
        # QEMU reboots in place (no -no-reboot): RESET {"guest": true, "reason": "guest-reset"}
        ev = g.wait_guest_reset(timeout=WD_TIMEOUT + WD_MARGIN + 10, since=t_send)
        r.check(board, f"QMP {ev.name} guest-reset event", ev.data.get("reason") == "guest-reset", str(ev.data))
        t_reset = ev.t
        if wd_event:
            # i6300esb: QEMU's own watchdog model fired (it precedes the RESET event)
            wev = g.wait_event("WATCHDOG", timeout=1, since=t_send)
            r.check(board, "QMP WATCHDOG event, action reset", wev.data.get("action") == "reset", str(wev.data))
            r.metric(board, "WATCHDOG event -> RESET event", ev.t - wev.t)
            t_reset = wev.t
        else:
            r.check(board, "no QMP WATCHDOG event (softdog resets through the kernel)",
                    not g.events_since(t_send, "WATCHDOG"))
        lat_hi, lat_lo = t_reset - t_send, t_reset - t_ack
        r.metric(board, "SIGKILL -> reset (host)", lat_hi)
        # Not T minus the time since the last feed: closing /dev/watchdog without the magic
        # 'V' makes the kernel log "watchdog did not stop!" and ping once more, so the full
        # timeout runs from the kill.
        print(f"         (the kill happened in the last {(t_ack - t_send) * 1000:.0f} ms of that; expect "
              f"{WD_TIMEOUT:.0f} s: the kernel pings once more when the killed feeder's fd closes)", flush=True)
        lo, hi = WD_TIMEOUT - 0.2, WD_TIMEOUT + WD_MARGIN
        r.check(board, f"reset latency within [{lo:.1f}, {hi:.1f}] s", lo <= lat_hi <= hi,
                f"{lat_lo:.3f}-{lat_hi:.3f} s")
        killed_lines = [l for t, l in g.lines if t_send <= t <= t_reset + 0.5]
        r.check(board, "kernel logged 'watchdog did not stop!'",
                any("watchdog did not stop!" in l for l in killed_lines))

        # (c2) the same QEMU process reboots in place: follow it into boot 2
        b2 = g.wait_ready(boot=2, timeout=90)
        r.metric(board, "reset -> control shell of boot 2", b2.t_ready - t_reset)
        r.check(board, "boot 2 ready, no WK-ERROR, disk mounted",
                not g.errors and "WK-DISK mounted /dev/vda /var/lib/watchkeeper" in b2.markers, str(b2.markers))
        got = g.sh("cat /var/lib/watchkeeper/smoke-marker")
        r.check(board, "disk marker survived the watchdog reset", got == marker, f"{got!r} vs {marker!r}")

        # clean power-off: QEMU must tell it apart from a reset, and exit by itself
        t_off = time.monotonic()
        g.run_nowait("poweroff")
        ev = g.wait_event("SHUTDOWN", timeout=30, since=t_off)
        r.check(board, "poweroff gives SHUTDOWN guest-shutdown", ev.data.get("reason") == "guest-shutdown", str(ev.data))
        code = g.wait_exit(15)
        r.check(board, "QEMU exits 0 after poweroff", code == 0, f"exit code {code}")
    r.metric(board, "scenario total", time.monotonic() - t_scn)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--board", choices=["aarch64", "armv7", "all"], default="all")
    ap.add_argument("--workdir", default=os.path.join(REPO, "target", "wk-qemu", "smoke"))
    ap.add_argument("--verbose", action="store_true", help="echo the guest console")
    args = ap.parse_args()
    boards = list(BOARDS) if args.board == "all" else [args.board]

    t0 = time.monotonic()
    r = Results()
    for board in boards:
        print(f"== {board}", flush=True)
        try:
            scenario(board, os.path.join(args.workdir, board), r, args.verbose)
        except AssertionError as e:
            print(f"  {board}: stopped at a failed check: {e}", flush=True)
        except (HarnessError, OSError, ValueError):  # harness trouble counts as a failure
            r.failed += 1
            print(f"  [FAIL] {board}: harness error:\n{traceback.format_exc()}", flush=True)
    total = time.monotonic() - t0

    print("\n== measured")
    for board, name, value, unit in r.metrics:
        print(f"  {board:8} {name:42} {value:.3f} {unit}" if unit else f"  {board:8} {name:42} {value}")
    print(f"  total smoke run: {total:.1f} s")
    print(f"smoke: {r.passed} passed, {r.failed} failed")
    return 1 if r.failed else 0


if __name__ == "__main__":
    sys.exit(main())
