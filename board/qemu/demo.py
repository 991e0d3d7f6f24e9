#!/usr/bin/env python3
"""The narrated run of the virtual appliance (what `board/run` shows after building).

Boots the appliance (initramfs from board/qemu/build-appliance.sh, fresh disk), then drives
it through the serial control shell and reads its LED line from the host over QMP:

  1. components beating, `watchkeeper status`, the healthy LED blip
  2. sensord killed with kill -9: problem file, repair, problem file gone, LED blink code 1
  3. uplink left dead (its init script refuses to start it, so every repair fails):
     LED blink code 2, then solid; the watchdog resets the board (QMP events)
  4. after the reboot, `watchkeeper status` and the log give the reset reason

Every step is checked; the exit code is 0 only if everything narrated was observed.
usage: demo.py --board aarch64|armv7 --initrd FILE --disk IMG --workdir DIR [--t0 EPOCH]
"""
import argparse
import os
import sys
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "tests", "system"))
from appliance import Appliance, classify_led, component, ms  # noqa: E402
from qemu_harness import HarnessError  # noqa: E402

# The demo config (board/qemu-*-virt/demo.toml): keep in step with it.
HB_TIMEOUT = 2.0
RESET_AFTER = 10.0
HW_TIMEOUT = 5.0
MARGIN = 2.0

_print_lock = threading.Lock()
T0 = time.time()


class DemoFailure(Exception):
    pass


def say(text, indent=""):
    with _print_lock:
        el = time.time() - T0
        for i, line in enumerate(str(text).splitlines() or [""]):
            prefix = f"[{time.strftime('%H:%M:%S')} +{el:6.1f}s] " if i == 0 else " " * 22
            print(f"{prefix}{indent}{line}", flush=True)


def block(text):
    """A guest command's output, indented under the line that announced it."""
    with _print_lock:
        for line in text.rstrip("\n").splitlines():
            print(f"{'':22}  | {line}", flush=True)


class Narrator:
    def __init__(self, board, initrd, disk, workdir):
        self.board = board
        self.checks = []
        self.log_seen = 0.0  # last kernel-log timestamp shown
        self.boot_of_log = 0
        self.led_pulse_start = None
        self.g = Appliance(board, initrd, disk, workdir, name=f"demo-{board}",
                           on_led_change=self.on_led)

    # -- LED, printed as it changes (called from the sampling thread)
    def on_led(self, t, level):
        if level:
            self.led_pulse_start = t
            return
        if self.led_pulse_start is None:
            return
        on = t - self.led_pulse_start
        self.led_pulse_start = None
        kind = ("fault flicker" if on < 0.075 else "healthy blip" if on < 0.15
                else "component blink" if on < 0.5 else "hold blink" if on < 1.1 else "solid on")
        say(f"LED  on {ms(on):4d} ms  ({kind})", indent="    ")

    def check(self, what, ok, detail=""):
        self.checks.append((what, ok, detail))
        say(f"{'OK  ' if ok else 'FAIL'} {what}" + (f": {detail}" if detail else ""))
        if not ok:
            raise DemoFailure(f"{what}: {detail}")

    def show_log(self):
        """Prints the agent's (and the init scripts') new kernel-log lines."""
        boot = len(self.g.boots)
        if boot != self.boot_of_log:
            self.boot_of_log, self.log_seen = boot, -1.0
        for ts, text in self.g.klog(grep=""):
            if ts <= self.log_seen:
                continue
            if "watchkeeper[" in text or "init.d/" in text:
                say(f"log  [{ts:8.3f}] {text}", indent="    ")
            self.log_seen = ts

    def run_shown(self, command):
        say(f"$ {command}")
        out, rc = self.g.run(command)
        block(out)
        return out, rc

    # -- the story
    def boot(self, n):
        b = self.g.wait_boot(n, timeout=120)
        say(f"boot {n}: kernel started /init ({b.markers[0].split(' ', 1)[1]})")
        b = self.g.wait_ready(n, timeout=120)
        for m in b.markers:
            if m.startswith(("WK-WATCHDOG", "WK-GPIO", "WK-DISK")):
                say(f"  {m}")
        say(f"boot {n}: control shell ready {b.t_ready - b.t_boot:.1f} s after /init")
        s = self.g.wait_agent(timeout=30)
        self.check(f"boot {n}: watchkeeper is running", s["agent"]["running"], f"pid {s['agent']['pid']}")
        return s

    def healthy(self):
        say("== 1. components beating, LED healthy")
        t0 = time.monotonic()
        self.g.wait_status(lambda s: all(c["state"] == "alive" for c in s["components"]), 30,
                           what="all components alive")
        self.run_shown("watchkeeper status")
        self.run_shown("for f in /run/sensord.beat /run/uplink.beat; do echo \"$f touched $(stat -c %y $f)\"; done; "
                       "sleep 1; for f in /run/sensord.beat /run/uplink.beat; do echo \"$f touched $(stat -c %y $f)\"; done")
        self.show_log()
        say("watching the LED for 7 s (sampled from the host: QMP xp of the PL061 data register)")
        time.sleep(max(0.0, 7.0 - (time.monotonic() - t0)))
        pulses = self.g.led.wait_pulses(2, t0, timeout=5)
        c = classify_led(pulses)
        self.check("LED shows the healthy pattern (100 ms blip every 3 s)", c["kind"] == "healthy", c["text"])
        s = self.g.status()
        self.check("no problem, all components alive", not s["problems"] and
                   all(x["state"] == "alive" for x in s["components"]),
                   ", ".join(f"{x['name']} {x['state']}" for x in s["components"]))

    def kill_and_repair(self, name="sensord"):
        say(f"== 2. {name} killed with kill -9: watchkeeper notices, marks the problem, repairs it")
        pid = self.g.sh(f"cat /run/{name}.pid")
        t_kill = time.monotonic()
        self.run_shown(f"kill -9 {pid}   # {name}")
        t_problem = self.g.wait_guest(f"test -e /run/watchkeeper/problems/{name}", 10,
                                      what=f"problem file for {name}")
        say(f"problem file /run/watchkeeper/problems/{name} appeared {t_problem - t_kill:.2f} s after the kill")
        self.run_shown(f"cat /run/watchkeeper/problems/{name}")
        self.show_log()
        t_gone = self.g.wait_guest(f"! test -e /run/watchkeeper/problems/{name}", 30,
                                   what=f"problem file for {name} gone")
        say(f"problem file gone {t_gone - t_kill:.2f} s after the kill: {name} is beating again")
        self.show_log()
        s = self.g.status()
        c = component(s, name)
        self.check(f"{name} alive again after its repair", c and c["state"] == "alive",
                   f"state {c and c['state']}, new pid {self.g.sh(f'cat /run/{name}.pid')} (was {pid})")
        log = " ".join(t for _, t in self.g.klog())
        self.check(f"the log shows {name} dead, repaired and alive again",
                   f"component {name} is dead" in log and f"repairing {name}" in log
                   and f"component {name} is alive again" in log)
        pulses = [p for p in self.g.led.pulses(t_kill, t_gone) if p[1] - p[0] > 0.15]
        c = classify_led(pulses)
        pos = component(s, name)["position"]
        self.check(f"LED showed blink code {pos} while {name} was down",
                   c["kind"] == "component" and all(n == pos for n in c.get("groups", [])), c["text"])
        self.run_shown("watchkeeper status")

    def left_dead(self, name="uplink"):
        say(f"== 3. {name} left dead: its init script now refuses to start it, so every repair fails")
        pid = self.g.sh(f"cat /run/{name}.pid")
        self.run_shown(f"touch /run/{name}.disabled; kill -9 {pid}   # {name}")
        t_kill = time.monotonic()
        self.g.wait_guest(f"test -e /run/watchkeeper/problems/{name}", 10, what=f"problem file for {name}")
        say(f"problem file for {name} written {time.monotonic() - t_kill:.2f} s after the kill; "
            f"a forced reset is due {RESET_AFTER:.0f} s after the death (reset_after)")
        shown_status = False
        forcing = False
        deadline = t_kill + RESET_AFTER + HW_TIMEOUT + 20
        # Until the agent says it forces the reset: its log and status. Then only QMP events
        # (a command sent to a board that is going down would only wait for the new boot).
        while time.monotonic() < deadline:
            if [e for e in self.g.events_since(t_kill) if e.name in ("WATCHDOG", "RESET", "SHUTDOWN")]:
                break
            if not forcing:
                try:
                    self.show_log()
                    forcing = any("forcing a board reset" in t for _, t in self.g.klog())
                    if not shown_status and not forcing and time.monotonic() - t_kill > 5:
                        self.run_shown("watchkeeper status")
                        shown_status = True
                except HarnessError:
                    forcing = True  # the board went down under the command
                time.sleep(0.3)
            else:
                time.sleep(0.02)
        try:
            reset = self.g.wait_guest_reset(timeout=max(1.0, RESET_AFTER + HW_TIMEOUT + MARGIN + 5 -
                                                        (time.monotonic() - t_kill)), since=t_kill)
        except HarnessError as e:
            raise DemoFailure(f"no board reset: {e}") from None
        wd = [e for e in self.g.events_since(t_kill, "WATCHDOG")]
        for e in wd + [reset]:
            say(f"QMP event {e.name} {e.data}  ({e.t - t_kill:.2f} s after the kill)")
        t_reset = wd[0].t if wd else reset.t
        lat = t_reset - t_kill
        limit = RESET_AFTER + HW_TIMEOUT + MARGIN
        self.check(f"the watchdog reset the board within reset_after + hardware timeout "
                   f"({RESET_AFTER:.0f} + {HW_TIMEOUT:.0f} s, +{MARGIN:.0f} s margin)",
                   RESET_AFTER <= lat <= limit, f"{lat:.2f} s after the kill")
        solid = self.g.led.on_fraction(max(t_kill, t_reset - 0.7), t_reset - 0.05)
        pulses = [p for p in self.g.led.pulses(t_kill + 0.5, t_reset - 0.8) if p[1] - p[0] > 0.15]
        c = classify_led(pulses)
        pos = 2 if name == "uplink" else 1
        self.check(f"LED showed blink code {pos} while {name} was dead",
                   c["kind"] == "component" and c["k"] == pos, c["text"])
        self.check("LED solid on just before the reset (reset imminent)", solid > 0.95,
                   f"on {solid:.0%} of the last 0.65 s")
        return t_reset

    def after_reboot(self, name="uplink"):
        say("== 4. after the reboot: the reset reason, from the persistent state")
        self.boot(2)
        self.show_log()
        self.run_shown("watchkeeper status")
        s = self.g.status()
        boots = sorted(s["boots"], key=lambda b: b["number"])  # status lists the newest first
        prev = boots[-2] if len(boots) >= 2 else {}
        self.check("status: the previous boot was reset by watchkeeper, naming the component",
                   prev.get("end") == "forced" and prev.get("component") == name and bool(prev.get("reason")),
                   f"boot {prev.get('number')}: end {prev.get('end')}, component {prev.get('component')!r}, "
                   f"reason {prev.get('reason')!r}")
        log = [t for _, t in self.g.klog()]
        line = next((l for l in log if "previous boot" in l), "")
        self.check("the log of the new boot names it too", name in line and "reset by watchkeeper" in line, line)

    def main(self):
        say(f"booting the {self.board} appliance: QEMU virt board (TCG), Debian kernel, "
            f"{'i6300esb' if self.board == 'aarch64' else 'softdog'} watchdog, LED on PL061 line 4, "
            f"state on a virtio disk")
        self.g.start()
        say(f"QEMU pid {self.g.proc.pid}; console log {self.g.console_log_path}")
        self.boot(1)
        self.show_log()
        self.healthy()
        self.kill_and_repair("sensord")
        self.left_dead("uplink")
        self.after_reboot("uplink")
        say("powering the appliance off")
        t = time.monotonic()
        self.g.run_nowait("poweroff")
        ev = self.g.wait_event("SHUTDOWN", timeout=30, since=t)
        self.check("clean power-off (QMP SHUTDOWN guest-shutdown)", ev.data.get("reason") == "guest-shutdown",
                   str(ev.data))


def main():
    global T0
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--board", choices=["aarch64", "armv7"], default="aarch64")
    ap.add_argument("--initrd", required=True)
    ap.add_argument("--disk", required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--t0", type=float, default=None, help="epoch seconds to count from")
    args = ap.parse_args()
    if args.t0:
        T0 = args.t0
    n = Narrator(args.board, args.initrd, args.disk, args.workdir)
    rc = 0
    try:
        n.main()
    except (DemoFailure, HarnessError, OSError) as e:
        rc = 1
        say(f"FAILED: {e}")
        say(f"console log: {n.g.console_log_path}")
    finally:
        n.g.close()
    ok = sum(1 for _, o, _ in n.checks if o)
    if rc == 0 and ok == len(n.checks):
        say(f"all {ok} observations confirmed")
    else:
        rc = 1
        say(f"{ok} of {len(n.checks)} observations confirmed before stopping")
    return rc


if __name__ == "__main__":
    sys.exit(main())
