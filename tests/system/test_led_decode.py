"""led_decode on synthetic sample streams: a busy host makes a reading unreliable (measured
again), a wrong LED is still a failure. Run by tests/run:

    python3 -m unittest tests/system/test_led_decode.py
"""
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from led_decode import decode  # noqa: E402

# The agent's patterns as on/off phases (seconds), as src/core/pattern.rs renders them.
HEALTHY = [(1, 0.1), (0, 2.9)]
FAULT = [(1, 0.05), (0, 0.05)]
HOLD = [(1, 1.0), (0, 1.0)]


def code(k):
    return [p for _ in range(k) for p in ((1, 0.2), (0, 0.3))][:-1] + [(0, 1.8)]


def level(phases, t, start=0.0):
    """The level of the repeated PHASES at time T (the pattern started at START)."""
    cycle = sum(d for _, d in phases)
    x = (t - start) % cycle
    for lv, d in phases:
        if x < d:
            return lv
        x -= d
    return phases[-1][0]


DARK = [(0, 1.0)]


def stream(phases, seconds, every=0.011, rtt=0.001, gaps=(), stalls=(), before=DARK, switch=1.2):
    """Samples of the LED showing PHASES for SECONDS: one read every EVERY s, each taking RTT.

    GAPS: (at, length) the sampler does not run from AT for LENGTH s. STALLS: (at, seconds)
    QEMU waited for a host CPU, reported by the sample after AT. BEFORE/SWITCH: the LED
    shows BEFORE until time SWITCH, then PHASES starting there (by default dark for 1.2 s,
    as before the agent shows a new pattern)."""
    out, t = [], 0.0
    gaps, stalls = sorted(gaps), sorted(stalls)
    while t < seconds:
        for at, length in gaps:
            if at <= t < at + length:
                t = at + length
        if t >= seconds:
            break
        lv = level(before, t) if before and t < switch else level(phases, t, switch or 0.0)
        st = 0.0
        while stalls and stalls[0][0] <= t:
            st += stalls.pop(0)[1]
        out.append((t, t + rtt, lv, st))
        t += rtt + every
    return out


class ComponentCode(unittest.TestCase):
    def test_right_code_quiet_host_passes(self):
        r = decode(stream(code(2), 6.0), 0.0, 6.0, "component", k=2)
        self.assertTrue(r.reliable, r.text)
        self.assertTrue(r.ok, r.text)
        self.assertIn(2, r.groups)

    def test_wrong_code_quiet_host_fails(self):
        r = decode(stream(code(1), 6.0), 0.0, 6.0, "component", k=2)
        self.assertTrue(r.reliable, r.text)
        self.assertFalse(r.ok, r.text)

    def test_too_many_blinks_fail_even_with_gaps_elsewhere(self):
        r = decode(stream(code(3), 6.0, gaps=[(4.9, 0.3)]), 0.0, 6.0, "component", k=2)
        self.assertTrue(r.reliable, r.text)
        self.assertFalse(r.ok, r.text)

    def test_right_code_with_a_gap_hiding_a_blink_is_unreliable_not_wrong(self):
        # the gap swallows the second blink: 2 blinks would read as 1
        s = stream(code(2), 2.4, gaps=[(0.45, 0.35)])
        r = decode(s, 0.0, 2.4, "component", k=2)
        self.assertFalse(r.reliable, r.text)
        self.assertIn("gap", r.why)

    def test_gap_at_an_edge_is_still_read_as_a_blink_but_not_timed(self):
        # the fall of the only blink (1.2-1.4 s) is seen 70 ms late: 270 ms, out of the band,
        # but surely a blink: the code is read, its length is not judged
        r = decode(stream(code(1), 4.2, gaps=[(1.39, 0.07)]), 0.0, 4.2, "component", k=1)
        self.assertTrue(r.reliable and r.ok, r.text)
        self.assertIn("not judged", r.text)

    def test_guest_stall_before_an_edge_is_not_timed(self):
        # the sampler looked every 11 ms, but QEMU waited 40 ms for a CPU up to the fall
        r = decode(stream(code(1), 4.2, stalls=[(1.395, 0.04)]), 0.0, 4.2, "component", k=1)
        self.assertTrue(r.reliable and r.ok, r.text)
        self.assertIn("not judged", r.text)

    def test_guest_stalled_during_a_long_blink_is_read_but_not_timed(self):
        # the bad-input failure of issue 8: a 280 ms blink while the guest lost 150 ms of its
        # CPU time in small waits (a repair spawned under TCG then): the code, not the length
        stalls = [(1.2 + 0.011 * i, 0.006) for i in range(25)]
        s = stream([(1, 0.28), (0, 1.8)], 4.2, stalls=stalls)
        r = decode(s, 0.0, 4.2, "component", k=1)
        self.assertTrue(r.reliable and r.ok, r.text)
        self.assertIn("not judged", r.text)
        # the same blink with the guest running freely is the agent's: too long
        r = decode(stream([(1, 0.28), (0, 1.8)], 4.2), 0.0, 4.2, "component", k=1)
        self.assertTrue(r.reliable, r.text)
        self.assertFalse(r.ok, r.text)

    def test_gap_making_a_blink_look_like_a_blip_is_unreliable(self):
        # the rise of the blink is seen 100 ms late: 100 ms on, a healthy blip or a blink?
        r = decode(stream(code(1), 4.2, gaps=[(1.19, 0.1)]), 0.0, 4.2, "component", k=1)
        self.assertFalse(r.reliable, r.text)
        self.assertIn("gap", r.why)

    def test_blink_too_long_measured_precisely_fails(self):
        r = decode(stream([(1, 0.3), (0, 1.8)], 4.2), 0.0, 4.2, "component", k=1)
        self.assertTrue(r.reliable, r.text)
        self.assertFalse(r.ok, r.text)

    def test_blink_really_too_long_with_good_samples_fails(self):
        long_blink = [(1, 0.3), (0, 1.8)]
        r = decode(stream(long_blink, 4.2), 0.0, 4.2, "component", k=1)
        self.assertTrue(r.reliable, r.text)
        self.assertFalse(r.ok, r.text)

    def test_blink_seen_past_the_band_only_by_its_sampling_passes(self):
        # 245 ms meant, sampled every 30 ms: seen up to 30 ms longer, never surely too long
        for start in (0.0, 0.01, 0.02):
            s = stream([(0, start), (1, 0.245), (0, 1.8 - start)], 4.2, every=0.03)
            r = decode(s, 0.0, 4.2, "component", k=1)
            self.assertTrue(r.ok, r.text)

    def test_blink_surely_past_the_band_fails_however_it_is_sampled(self):
        for start in (0.0, 0.01, 0.02):
            s = stream([(0, start), (1, 0.31), (0, 1.8 - start)], 4.2, every=0.03)
            r = decode(s, 0.0, 4.2, "component", k=1)
            self.assertFalse(r.ok, r.text)

    def test_one_good_group_decides_despite_a_bad_one(self):
        s = stream(code(2), 6.0, gaps=[(0.45, 0.35)])  # first group unreliable, second fine
        r = decode(s, 0.0, 6.0, "component", k=2)
        self.assertTrue(r.reliable, r.text)
        self.assertTrue(r.ok, r.text)
        self.assertEqual(r.uncertain_groups, 1)

    def test_healthy_blips_around_the_code_are_not_blinks(self):
        # kill-repair's window: healthy, then code 2 while the component is down, healthy again
        s = stream(code(2), 4.5, before=HEALTHY, switch=1.7)
        s = [x for x in s if x[1] < 3.2] + [x[:2] + (level(HEALTHY, x[1], 3.2),) + x[3:]
                                             for x in s if x[1] >= 3.2]
        r = decode(s, 0.5, 4.5, "component", k=2)
        self.assertTrue(r.reliable and r.ok, r.text)
        self.assertEqual(r.groups, [2])

    def test_fault_flicker_instead_of_a_code_fails(self):
        r = decode(stream(FAULT, 3.0), 0.0, 3.0, "component", k=1)
        self.assertTrue(r.reliable, r.text)
        self.assertFalse(r.ok, r.text)

    def test_no_samples_is_unreliable(self):
        r = decode(stream(code(1), 3.0, gaps=[(0.05, 10)]), 0.0, 3.0, "component", k=1)
        self.assertFalse(r.reliable, r.text)


def steady(phases, seconds, **kw):
    """A stream of PHASES shown since before the window (no pattern change in it)."""
    return stream(phases, seconds, before=None, switch=None, **kw)


class Periodic(unittest.TestCase):
    def test_fault_quiet_passes(self):
        r = decode(steady(FAULT, 3.0), 0.0, 3.0, "fault")
        self.assertTrue(r.reliable and r.ok, r.text)

    def test_fault_with_a_few_gaps_still_decides(self):
        r = decode(steady(FAULT, 3.0, gaps=[(1.0, 0.08), (2.0, 0.08)]), 0.0, 3.0, "fault")
        self.assertTrue(r.reliable and r.ok, r.text)

    def test_fault_sampled_too_sparsely_is_unreliable(self):
        r = decode(steady(FAULT, 3.0, every=0.04), 0.0, 3.0, "fault")
        self.assertFalse(r.reliable, r.text)

    def test_healthy_when_fault_expected_fails(self):
        r = decode(steady(HEALTHY, 3.0), 0.0, 3.0, "fault")
        self.assertTrue(r.reliable, r.text)
        self.assertFalse(r.ok, r.text)

    def test_healthy_when_fault_expected_fails_with_a_gap_too(self):
        # 2.8 s measured well without a flicker: the agent is wrong, whatever hid in the gap
        r = decode(steady(HEALTHY, 3.0, gaps=[(1.5, 0.2)]), 0.0, 3.0, "fault")
        self.assertTrue(r.reliable, r.text)
        self.assertFalse(r.ok, r.text)

    def test_fault_hidden_by_many_gaps_is_unreliable(self):
        gaps = [(0.1 * i, 0.06) for i in range(30)]
        r = decode(steady(FAULT, 3.0, gaps=gaps), 0.0, 3.0, "fault")
        self.assertFalse(r.reliable, r.text)

    def test_healthy_quiet_passes(self):
        r = decode(steady(HEALTHY, 6.5), 0.0, 6.5, "healthy")
        self.assertTrue(r.reliable and r.ok, r.text)
        self.assertEqual(len(r.pulses), 2)  # 0.0 (cut by the window), 3.0, 6.0

    def test_healthy_blip_hidden_by_a_gap_is_unreliable(self):
        r = decode(steady(HEALTHY, 3.5, gaps=[(2.95, 0.2)]), 0.5, 3.5, "healthy")
        self.assertEqual(r.pulses, [])
        self.assertFalse(r.reliable, r.text)

    def test_hold_quiet_passes_and_fault_is_not_hold(self):
        self.assertTrue(decode(steady(HOLD, 6.5), 0.0, 6.5, "hold").ok)
        r = decode(steady(FAULT, 5.0), 0.0, 5.0, "hold")
        self.assertTrue(r.reliable, r.text)
        self.assertFalse(r.ok, r.text)


if __name__ == "__main__":
    unittest.main()
