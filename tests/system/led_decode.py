"""Reading the fault LED from the host's samples, and knowing when that reading can be trusted.

Pure (python3 stdlib only, no QEMU): tests/system/test_led_decode.py feeds it synthetic sample
streams. appliance.LedSampler records the streams; scenarios.py asks decode() for a verdict.

A sample is (t_req, t_resp, level, stall), host time.monotonic() seconds:
  t_req   the QMP read of the PL061 data register was sent,
  t_resp  its answer arrived (the register was read somewhere in [t_req, t_resp]),
  level   0 or 1,
  stall   seconds QEMU's vCPU thread spent waiting for a host CPU since the previous sample
          (the increase of /proc/PID/task/TID/schedstat's run-queue wait).

Two things can move an edge away from where the agent put it without the agent being wrong:
the sampler not looking (an edge is only known to lie between two reads: blind =
t_resp[i] - t_req[i-1]) and the guest not running (TCG: a vCPU thread waiting for a host CPU
wakes the agent late, so its edge comes late by the stall reported just before it).
Both only delay edges: what the agent meant for a pulse lies in [length - fall_u,
length + rise_u], u being a sample's blind interval plus the stall before it. Only what is
sure decides: a blink code from groups whose every pulse is surely a blink (not a short
blip) and next to which no blind interval is long enough for a blink to hide in (HIDE); a
periodic pattern from pulses surely inside (or surely outside) its on-time band, and a
blind time small enough that another pattern cannot hide in it. A busy host can hide pulses
and blur lengths, never make a pulse up: what is seen surely wrong fails at once.

decode() returns a Reading: reliable (enough sure evidence to decide), ok (the agent showed
what was expected; meaningful only when reliable), why (what made it unreliable), text (one
human line).
"""
import statistics
from dataclasses import dataclass, field

# On-time bands of the classifier (seconds) and the period bands, per pattern kind. The same
# numbers as appliance.classify_led, which names what the LED shows in a whole window.
ON_BAND = {"healthy": (0.07, 0.14), "fault": (0.02, 0.08), "component": (0.16, 0.25), "hold": (0.85, 1.15)}
PERIOD_BAND = {"healthy": (2.7, 3.3), "fault": (0.07, 0.14), "hold": (1.8, 2.2)}
PERIOD = {"healthy": 3.0, "fault": 0.1, "hold": 2.0}  # nominal
# The longest short pulse: the healthy blip's band top (the fault flicker is shorter still),
# shown before the component died or after it was repaired. Blinks are longer.
SHORT_TOP = ON_BAND["healthy"][1]
# Dark time that ends a blink group (between blinks 0.3 s, between groups 1.5 s).
GROUP_GAP = 1.0

# A blind interval this long may hide a whole phase that matters for the expected pattern:
# 9/10 of its shortest phase (component: a 200 ms blink; fault: a 50 ms flicker phase;
# healthy: the 100 ms blip; hold: a 1 s phase). A stretch with a longer one is uncertain.
HIDE = {"component": 0.18, "fault": 0.045, "healthy": 0.09, "hold": 0.9}
# Edge uncertainty at which a pulse's length still counts against the on-time band: 4/5 of
# the classifier's margin around the nominal on-time (component 200 ms within [150, 250]:
# 40 ms; fault 50 ms within [20, 80]: 25 ms; healthy 100 ms within [70, 140]: 25 ms; hold
# 1000 ms within [850, 1150]: 120 ms).
PRECISE = {"component": 0.04, "fault": 0.025, "healthy": 0.025, "hold": 0.12}
# Precisely measured pulses needed to judge a periodic pattern from a window that also had
# uncertain parts; and the largest share of a window that may be uncertain at all.
MIN_PULSES = {"fault": 10, "healthy": 1, "hold": 2}
MAX_UNCERTAIN_SHARE = 0.25


@dataclass
class Pulse:
    start: float  # host time of the first sample that read on
    end: float  # host time of the first sample that read off again (or the window's end)
    rise_u: float  # uncertainty of each edge (s): blind interval + guest stall
    fall_u: float
    blind: float  # longest blind interval from its rise to its fall (a hidden off phase)
    whole: bool = True  # False: still on at the window's end
    stall: float = 0.0  # guest stall reported from its rise to its fall: the guest ran that
    # much less while it meant to keep the LED on, so work it did then (a repair spawned
    # under TCG) may have pushed the fall that much later

    @property
    def length(self):
        return self.end - self.start


@dataclass
class Dark:
    start: float
    end: float
    blind: float  # longest blind interval in it: a pulse as long may hide there
    after: int | None  # index of the pulse before it (None: the window began dark)
    closed: bool  # False: still dark at the window's end


@dataclass
class Reading:
    expect: str
    reliable: bool
    ok: bool
    text: str
    why: str = ""  # why the reading is unreliable (empty when reliable)
    worst: float = 0.0  # largest uncertainty of a sample in the window (s)
    worst_at: float = 0.0  # its host time
    pulses: list = field(default_factory=list)  # every whole Pulse in the window
    groups: list = field(default_factory=list)  # component: sizes of the groups counted
    uncertain_groups: int = 0  # component: groups whose size the host made unknown
    uncertain_time: float = 0.0  # seconds of the window a phase may hide in, or imprecise

    @property
    def limit(self):
        return PRECISE[self.expect]


def uncertainties(samples):
    """Per sample: (blind, u). blind: how long the sampler did not look before it
    (t_resp[i] - t_req[i-1]); u: how far the edge it may show is from where the agent put
    it: blind plus the guest's stall before it (the stalls reported by this sample and the
    ones before, going back as long as the stall found so far could still reach there: a
    stall is reported when the stalled thread runs again). The first sample has no
    predecessor: infinite."""
    out = [(float("inf"), float("inf"))] if samples else []
    for i in range(1, len(samples)):
        t_resp = samples[i][1]
        late, j = 0.0, i
        while j >= 1:
            late += samples[j][3]
            if t_resp - samples[j - 1][1] >= late:
                break
            j -= 1
        blind = t_resp - samples[i - 1][0]
        out.append((blind, blind + late))
    return out


def precise(p, expect):
    """PULSE measured well enough for its length and start to be checked to the band of
    EXPECT: both edges within PRECISE, no blind spot a phase could hide in."""
    return (p.whole and p.blind < HIDE[expect] and max(p.rise_u, p.fall_u) <= PRECISE[expect]
            and p.stall <= PRECISE[expect])


def _median(xs):
    return statistics.median(xs) if xs else None


def _ms(x):
    return "-" if x is None else f"{round(x * 1000)}"


def decode(samples, t0, t1, expect, k=None):
    """What the LED showed between host times T0 and T1, checked against EXPECT.

    SAMPLES: the sampler's stream (it may extend beyond the window; one sample before T0 is
    used as the predecessor of the first). EXPECT: "healthy", "fault", "hold" or "component"
    (then K is the expected blink count)."""
    first = 0
    while first < len(samples) and samples[first][1] < t0:
        first += 1
    win = [x for x in samples[max(0, first - 1):] if x[1] <= t1]
    if sum(1 for x in win if x[1] >= t0) < 2 or t1 <= t0:
        return Reading(expect, False, False, "no LED samples in the window",
                       "no LED sample in the window (the sampler did not run)")
    if t1 > win[-1][1]:
        # the stretch after the last sample: an edge may hide in it if it is long
        win.append((t1, t1, win[-1][2], 0.0))
    bu = uncertainties(win)
    if win[0][1] >= t0:  # no sample before the window: its start is not known
        bu[0] = (win[0][1] - t0, win[0][1] - t0)
    worst, worst_at = max((b[1], x[1]) for b, x in zip(bu[1:], win[1:]))
    # runs of equal level: [level, first index, last index]
    runs = []
    for i, x in enumerate(win):
        if runs and runs[-1][0] == x[2]:
            runs[-1][2] = i
        else:
            runs.append([x[2], i, i])
    hide = HIDE[expect]
    pulses, darks = [], []
    lead = runs[0]  # began before the window: its length is not known
    lead_blind = max(b[0] for b in bu[1:lead[2] + 2]) if len(bu) > 1 else float("inf")
    uncertain = sum(b[0] for b in bu[1:lead[2] + 2] if b[0] >= hide)
    for n in range(1, len(runs)):
        lv, a, b = runs[n]
        closed = n + 1 < len(runs)
        nxt = runs[n + 1][1] if closed else b
        start, end = win[a][1], win[nxt][1]
        blinds = [x[0] for x in bu[a + 1:nxt + 1]]
        blind = max(blinds, default=0.0)
        hidden = sum(x for x in blinds if x >= hide)  # where a phase may hide
        uncertain += hidden
        if lv == 1:
            pulses.append(Pulse(start, end, bu[a][1], bu[nxt][1] if closed else float("inf"), blind, closed,
                                sum(x[3] for x in win[a + 1:nxt + 1])))
        else:
            darks.append(Dark(start, end, blind, len(pulses) - 1 if pulses else None, closed))
    r = Reading(expect, True, False, "", "", worst, worst_at, [p for p in pulses if p.whole],
                uncertain_time=uncertain)
    why = (f"sampler gap or guest stall up to {_ms(worst)} ms (limits: {_ms(PRECISE[expect])} ms "
           f"at an edge, {_ms(hide)} ms blind); {uncertain:.2f} s of {t1 - t0:.1f} s uncertain")
    if expect == "component":
        return _component(r, pulses, darks, (lead[0], win[lead[2] + 1][1] - t0 if len(runs) > 1 else t1 - t0,
                                             lead_blind < hide), k, why)
    return _periodic(r, darks, t1 - t0, expect, why)


def _periodic(r, darks, span, expect, why):
    """healthy, fault, hold: pulses whose length surely is (or surely is not) in the band.

    What the agent meant lies in [length - fall_u, length + rise_u] (sampling and stalls only
    delay edges): a pulse whose whole interval is in the band is *in*, one whose interval
    misses the band is *out*, the others are not judged (seen, but of unknown length). Periods
    are taken between judged pulses with no blind spot between them (median in band)."""
    hide = HIDE[expect]
    lo, hi = ON_BAND[expect]
    plo, phi = PERIOD_BAND[expect]
    need = MIN_PULSES[expect]
    pulses = r.pulses
    judged = []
    for p in pulses:
        meant_lo, meant_hi = p.length - p.fall_u - p.stall, p.length + p.rise_u
        if p.blind < hide and lo <= meant_lo and meant_hi <= hi:
            judged.append("in")
        elif p.blind < hide and (meant_hi < lo or meant_lo > hi):
            judged.append("out")
        else:
            judged.append(None)  # seen, so nothing else hid there: only its length is unknown
    ins, outs = judged.count("in"), judged.count("out")
    dark_ok = {d.after: d.blind < hide for d in darks}  # pulse index -> the dark after it is certain
    periods = [pulses[i + 1].start - pulses[i].start for i in range(len(pulses) - 1)
               if judged[i] and judged[i + 1] and dark_ok.get(i, False)]
    on = _median([p.length for p, j in zip(pulses, judged) if j])
    per = _median(periods)
    per_ok = per is None or plo <= per <= phi
    r.ok = ins >= need and outs * 4 <= ins and per_ok
    r.text = (f"{expect}: {ins} pulses surely in the on-time band {_ms(lo)}-{_ms(hi)} ms, {outs} surely "
              f"out, {len(pulses) - ins - outs} not judged; on {_ms(on)} ms, period {_ms(per)} ms "
              f"(band {_ms(plo)}-{_ms(phi)}), {r.uncertain_time:.2f} s uncertain")
    # wrong for sure: pulses surely out of the band, or a period surely out of it
    wrong = (outs >= need and outs * 4 > ins) or (len(periods) >= 3 and not per_ok)
    # too few pulses is the agent's doing only if the part measured well was long enough to
    # show them wherever the uncertain part lay
    # show them wherever the uncertain part lay, and the pulses seen but not judged would
    # not have been enough either
    unjudged = len(pulses) - ins - outs
    could_show = span - r.uncertain_time >= (need + 1) * PERIOD[expect] and ins + unjudged < need
    if wrong or (r.uncertain_time <= MAX_UNCERTAIN_SHARE * span and (r.ok or could_show)):
        return r
    r.reliable, r.why = False, f"{why}; {ins} pulses judged in the band, {need} needed"
    return r


def _component(r, pulses, darks, lead, k, why):
    """Blink groups whose every pulse is surely a blink, bounded by darks no blink can hide
    in, decide the code.

    A pulse is surely a blink when what the agent meant (its length, corrected by its edges'
    uncertainties) is longer than any short blip (SHORT_TOP), surely a blip when it is
    shorter than any blink (the blink band's bottom); else it may be either. A group is bounded by a dark of
    GROUP_GAP or more, or by a short blip (the healthy or fault pattern before or after the
    code). A group is *cut* when the window's start or end may have cut it, *in doubt* when
    a blink may hide next to it or one of its pulses may be either (the host's doing). Only
    groups neither cut nor in doubt are counted; only doubt makes a reading unreliable (a cut
    is the window's, not the host's). The blinks' on-time is checked against the band from
    those measured within PRECISE (edges, and the guest's stall while it was on)."""
    hide = HIDE["component"]
    lead_level, lead_len, lead_certain = lead
    groups = []  # {"n", "cut", "doubt", "ons"}
    cur = None
    # the boundary before the next pulse: may the group starting there be cut, or in doubt?
    b_cut, b_doubt = lead_level == 1 or lead_len < GROUP_GAP, not lead_certain
    first_dark = next((d for d in darks if d.after is None), None)
    if lead_level == 1 and first_dark:  # the window began on a pulse of unknown length
        b_cut = first_dark.end - first_dark.start < GROUP_GAP
        b_doubt = b_doubt or first_dark.blind >= hide
    dark_after = {d.after: d for d in darks if d.after is not None}
    for i, p in enumerate(pulses):
        # what the agent meant: sampling and stalls only delay edges, so the fall may have
        # come up to fall_u earlier and the rise up to rise_u earlier than seen
        meant_lo, meant_hi = p.length - p.fall_u, p.length + p.rise_u
        short = meant_hi < ON_BAND["component"][0]  # surely no blink
        sure = p.whole and p.blind < hide and (short or meant_lo > SHORT_TOP)
        if sure and short:
            if cur:  # a short blip ends the group before it
                groups.append(cur)
            cur = None
        else:  # a blink, or a pulse that may be one
            if cur is None:
                cur = {"n": 0, "cut": b_cut, "doubt": b_doubt, "ons": []}
            cur["n"] += 1
            if not p.whole:
                cur["cut"] = True
            elif not sure:
                cur["doubt"] = True
            elif precise(p, "component"):
                cur["ons"].append(p)
        d = dark_after.get(i)
        if d is None:  # the pulse runs to the window's end
            break
        certain = d.blind < hide
        long = d.end - d.start >= GROUP_GAP
        if cur:
            cur["doubt"] = cur["doubt"] or not certain
            cur["cut"] = cur["cut"] or (not d.closed and not long)
            if long or not d.closed:
                groups.append(cur)
                cur = None
        b_cut, b_doubt = False, not certain
    if cur:
        cur["cut"] = True
        groups.append(cur)
    counted = [g for g in groups if not g["cut"] and not g["doubt"]]
    sizes = [g["n"] for g in counted]
    r.groups = sizes
    r.uncertain_groups = sum(g["doubt"] for g in groups)
    ons = [o for g in counted for o in g["ons"]]
    on = _median([p.length for p in ons])
    lo, hi = ON_BAND["component"]
    # a cut group is at least as long as it looks: more than k blinks is wrong either way
    too_many = [g["n"] for g in groups if not g["doubt"] and g["n"] > k]
    # wrong only when what the agent meant is surely out of the band: a blink seen 1 ms
    # long that may have risen 30 ms late is not
    on_ok = on is None or (_median([p.length - p.fall_u for p in ons]) <= hi
                           and _median([p.length + p.rise_u for p in ons]) >= lo)
    r.ok = k in sizes and not too_many and on_ok
    within = _ms(PRECISE["component"])
    blink = (f"blink on {_ms(on)} ms (band {_ms(lo)}-{_ms(hi)}, {len(ons)} measured within {within} ms)"
             if ons else f"no blink measured within {within} ms (its length not judged)")
    r.text = (f"component code {k}: blink groups {sizes}, in doubt {r.uncertain_groups}, cut by the "
              f"window {sum(g['cut'] and not g['doubt'] for g in groups)}, {blink}")
    if not r.ok and not too_many and k not in sizes and (r.uncertain_groups or (not groups and r.uncertain_time)):
        r.reliable, r.why = False, f"{why}; blink groups in doubt: {r.uncertain_groups}"
    return r
