"""`immersions bench link`: how close our loop's start lands to the band's bar, over Link.

Two processes join one Link session inside a private network namespace that this command
makes itself (`unshare -rn`), so Link's multicast discovery never leaves it:
- the band: a bare aalink peer at 133 BPM that changes its tempo once and writes down its
  beat clock (pairs of time.perf_counter() and Link beat, every 20 ms);
- us: a real LoopPlayer on miniaudio's NULL backend, a control hub and a `LinkSession`. It
  plays a loop of `bars` bars at the hub's `bpm`, offers a new clip of the right length when
  the tempo changes (as the dream engine does), proposes a tempo of its own once, and writes
  down when each loop start is heard (the player's `position()`, the clock the picture uses).

Both read CLOCK_MONOTONIC (time.perf_counter() is system-wide on Linux), so the parent
reads each loop start's time on the band's beat clock: the offset from the nearest bar
group (the quantum, 4 x bars beats). The baseline, in the same namespace and run, is the
same player started on the bar once and then left to run free ("naive").

Run inside the namespace, the sides are `python -m immersions.bench.link band|ours`.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import logging
import os
import shlex
import signal
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

from immersions.errors import ImmersionsError

log = logging.getLogger(__name__)

NAMESPACE_SETUP = "ip link set lo up; ip link set lo multicast on; ip route add 224.0.0.0/4 dev lo"
BAND_TEMPO = 133.0
BAND_CHANGE = 126.0  # the band's tempo change, at 40 % of the run
OUR_CHANGE = 128.0  # the tempo we propose, at 70 % of the run
BARS = 2
SAMPLE_S = 0.02
TOLERANCE_MS = 10.0


def namespace_problem() -> str | None:
    """Why a private network namespace with multicast on loopback cannot be made here (None: it can)."""
    if sys.platform != "linux":
        return "private network namespaces (unshare -rn) exist only on Linux"
    for tool in ("unshare", "ip"):
        if shutil.which(tool) is None:
            return f"'{tool}' is not installed"
    try:
        done = subprocess.run(["unshare", "-rn", "sh", "-c", NAMESPACE_SETUP], capture_output=True, text=True,
                              timeout=10)
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"unshare -rn failed ({err})"
    if done.returncode != 0:
        return f"unshare -rn failed: {(done.stderr or done.stdout).strip().splitlines()[-1:] or done.returncode}"
    return None


# -- the two sides (each in its own process, inside the namespace) ----------------------------------------

def _pair(link) -> tuple[float, float] | None:
    """(perf_counter, Link beat) read together: the tightest of a few tries, None if all were preempted."""
    best = None
    for _ in range(5):
        before = time.perf_counter()
        beat = link.beat
        after = time.perf_counter()
        if best is None or after - before < best[0]:
            best = (after - before, 0.5 * (before + after), beat)
        if after - before <= 0.0002:
            break
    return (best[1], best[2]) if best[0] <= 0.002 else None


async def _band(seconds: float, quantum: float, change_at: float, out: Path, until: list[Path]) -> None:
    """A bare peer: it plays on until the `until` files exist (the other sides have finished; on a
    busy machine they may start late), or `seconds` after it first saw a peer."""
    import aalink

    link = aalink.Link(BAND_TEMPO)
    link.quantum = quantum
    link.enabled = True
    began = time.perf_counter()
    samples, changed, met = [], None, None
    while not (until and all(p.exists() for p in until)) and time.perf_counter() - (met or began) < seconds:
        if met is None and link.num_peers > 0:
            met = time.perf_counter()  # the tempo change is timed from here, so it falls inside our run
        if changed is None and met is not None and time.perf_counter() - met >= change_at:
            link.tempo = BAND_CHANGE
            changed = time.perf_counter()
        pair = _pair(link)
        if pair is not None:
            samples.append((pair[0], pair[1], link.tempo, int(link.num_peers)))
        await asyncio.sleep(SAMPLE_S)
    link.enabled = False
    out.write_text(json.dumps({"quantum": quantum, "changed": changed, "samples": samples}))


def _ours(seconds: float, bars: int, propose_at: float, hold: bool, out: Path) -> None:
    from immersions.devices.player import LoopPlayer
    from immersions.synth import render_loop
    from immersions.control.hub import OSC, ControlHub, Values
    from immersions.control.link import LinkSession

    rate = 16000
    hub = ControlHub(Values())
    hub.set("bars", bars)
    boundaries, tempi, proposed, peers, sources, joined = [], [], None, 0, [], None
    hub.listen(lambda change: sources.append((change.value, change.source)) if change.name == "bpm" else None)
    with LoopPlayer(backend="null", sample_rate=48000) as player:
        session = LinkSession(hub, player if hold else None).start()
        try:
            if not hold:  # the baseline: started on the bar once, then free
                deadline = time.perf_counter() + 2.0
                while session.grid is None and time.perf_counter() < deadline:
                    time.sleep(0.01)
                player.set_grid(session.grid)
            serial, bpm = 0, None
            began = time.perf_counter()
            last_fraction, last_serial = 1.0, -1
            while (now := time.perf_counter()) - began < seconds:
                hub.apply()
                if hub.params["bpm"] != bpm:  # the dream engine makes loops of the new length; so do we
                    bpm = hub.params["bpm"]
                    serial += 1
                    player.offer(SimpleNamespace(serial=serial, clip=render_loop("groove", bars, bpm, rate),
                                                 sample_rate=rate))
                    tempi.append((now, bpm))
                if proposed is None and now - began >= propose_at:
                    hub.set("bpm", OUR_CHANGE, OSC)
                    proposed = now
                peers = max(peers, session.status.peers)
                if joined is None and peers > 0:
                    joined = now  # before this, the bar we hold is our own session's, not the band's
                head = player.position(now)
                if head.serial >= 0:
                    if not hold and player.renderer.grid is not None:
                        player.set_grid(None)
                    if head.fraction < last_fraction - 0.5 or (head.serial != last_serial and head.fraction < 0.5):
                        boundaries.append((now - head.seconds, head.loop_seconds))
                    last_fraction, last_serial = head.fraction, head.serial
                time.sleep(0.01)
            stats = player.stats()
        finally:
            session.close()
    out.write_text(json.dumps({"hold": hold, "boundaries": boundaries, "tempi": tempi, "proposed": proposed,
                               "joined": joined, "bpm_changes": sources,
                               "peers": peers, "realigns": stats.realigns, "underruns": stats.underruns,
                               "late_callbacks": stats.late_callbacks, "callbacks": stats.callbacks}))


# -- the parent: run both in a namespace, then read one side's times on the other's clock ---------------------

def bar_offsets(boundaries: list[tuple[float, float]], samples: list[tuple], quantum: float) -> list[float | None]:
    """Seconds from each loop start to the nearest bar group on the band's clock (negative: early);
    None for a loop start outside the band's recording."""
    times = [s[0] for s in samples]
    offsets = []
    for t, _ in boundaries:
        i = bisect.bisect_left(times, t)
        nearest = min((j for j in (i - 1, i) if 0 <= j < len(samples)), key=lambda j: abs(times[j] - t), default=None)
        if nearest is None or abs(times[nearest] - t) > 0.5:
            offsets.append(None)  # outside the band's recording (the tempo is read from the nearest sample)
            continue
        ts, beat, tempo, _ = samples[nearest]
        phase = (beat + (t - ts) * tempo / 60.0) % quantum
        off = phase if phase < 0.5 * quantum else phase - quantum
        offsets.append(off * 60.0 / tempo)
    return offsets


def _summary(offsets: list[float | None]) -> dict:
    offsets = [o for o in offsets if o is not None]
    ms = [abs(o) * 1000.0 for o in offsets]
    if not ms:
        return {"loops": 0}
    return {"loops": len(ms), "median_ms": round(statistics.median(ms), 3), "max_ms": round(max(ms), 3),
            "mean_signed_ms": round(1000.0 * statistics.fmean(offsets), 3)}


def run_pair(seconds: float, bars: int = BARS, baseline: bool = True, python: str = sys.executable,
             timeout: float | None = None) -> dict:
    """Band and us (and the free-running baseline) in one private namespace; the raw records."""
    problem = namespace_problem()
    if problem is not None:
        raise ImmersionsError(f"Link is only tried inside a private network namespace, and {problem}; "
                              "run this on Linux with unshare and iproute2")
    quantum = 4.0 * bars
    with tempfile.TemporaryDirectory(prefix="immersions-link-") as folder:
        folder = Path(folder)
        sides = ("ours", "naive") if baseline else ("ours",)
        band = [python, "-m", "immersions.bench.link", "band", "--seconds", str(seconds + 120.0),
                "--quantum", str(quantum), "--change-at", str(0.4 * seconds), "--out", str(folder / "band.json"),
                "--until", *(str(folder / f"{side}.json") for side in sides)]
        ours = [python, "-m", "immersions.bench.link", "ours", "--seconds", str(seconds), "--bars", str(bars),
                "--propose-at", str(0.7 * seconds)]
        script = [NAMESPACE_SETUP, shlex.join(band) + " &", "sleep 1"]
        script.append(shlex.join(ours + ["--out", str(folder / "ours.json")]) + " &")
        if baseline:  # it proposes no tempo of its own: only ours does
            naive = ours[:ours.index("--propose-at")]
            script.append(shlex.join(naive + ["--naive", "--out", str(folder / "naive.json")]) + " &")
        script.append("wait")
        # its own process group, so that a run past the timeout is stopped whole (no peer left behind)
        shell = subprocess.Popen(["unshare", "-rn", "sh", "-c", "\n".join(script)], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            stdout, stderr = shell.communicate(timeout=timeout or seconds + 240.0)
        except subprocess.TimeoutExpired:
            os.killpg(shell.pid, signal.SIGKILL)
            stdout, stderr = shell.communicate()
        done = SimpleNamespace(stdout=stdout, stderr=stderr)
        try:
            doc = {name: json.loads((folder / f"{name}.json").read_text())
                   for name in ("band", "ours") + (("naive",) if baseline else ())}
        except (OSError, ValueError) as err:
            tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
            raise ImmersionsError(f"a Link peer did not finish ({err}): {' | '.join(tail)}") from err
    return doc


def analyse(doc: dict) -> dict:
    """The figures of one run: offsets (all loops, loops more than one loop after a tempo change, and the
    first loop start after each change),
    how each tempo change spread, peers, realigns, audio counters.

    A loop start before that side first saw a peer is held on its own session's bar, not yet the band's
    (on a busy machine the first clip can start before the peers meet): it is listed in `loop_starts`
    and counted in `before_peers`, and no summary includes it."""
    band, ours = doc["band"], doc["ours"]
    samples, quantum = band["samples"], band["quantum"]
    changes = [t for t, _ in ours["tempi"]] + [x for x in (band["changed"], ours["proposed"]) if x is not None]

    def met(side, boundaries):  # the loop starts once a peer was seen (None: never seen, so none)
        joined = side.get("joined")
        return [b for b in boundaries if joined is not None and b[0] >= joined]

    def settled(boundaries):  # loop starts with no tempo change (nor the first clip) within about a loop
        return [b for b in boundaries if all(not (c - 0.25 * b[1] <= b[0] < c + b[1]) for c in changes)]

    def after_change(boundaries):  # the first loop start after each tempo change: the clip of the old length
        firsts = {tuple(min((b for b in boundaries if b[0] > c), key=lambda b: b[0]))
                  for c in changes if any(b[0] > c for b in boundaries)}
        return sorted(firsts)

    result = {"quantum_beats": quantum, "band_tempo": BAND_TEMPO, "tolerance_ms": TOLERANCE_MS}
    for name in ("ours", "naive"):
        side = doc.get(name)
        if side is None:
            continue
        offsets = bar_offsets(side["boundaries"], samples, quantum)
        began = side["boundaries"][0][0] if side["boundaries"] else 0.0
        heard = met(side, side["boundaries"])
        result[name] = {"all": _summary(bar_offsets(heard, samples, quantum)), "unmatched": offsets.count(None),
                        "before_peers": len(side["boundaries"]) - len(heard),
                        "joined_s": None if side.get("joined") is None else round(side["joined"] - began, 2),
                        "loop_starts": [[round(t - began, 2), None if o is None else round(1000.0 * o, 2)]
                                        for (t, _), o in zip(side["boundaries"], offsets)],
                        "settled": _summary(bar_offsets(settled(heard), samples, quantum)),
                        "after_change": _summary(bar_offsets(after_change(heard), samples, quantum)),
                        "peers": side["peers"], "realigns": side["realigns"], "underruns": side["underruns"],
                        "late_callbacks": side["late_callbacks"], "callbacks": side["callbacks"]}
    # the band's change reaching our bpm, and ours reaching the band
    followed = next((t for t, bpm in ours["tempi"] if abs(bpm - BAND_CHANGE) < 0.01), None)
    result["band_change_seen_after_s"] = (round(followed - band["changed"], 3)
                                          if followed is not None and band["changed"] is not None else None)
    heard = next((s[0] for s in samples if ours["proposed"] is not None and s[0] >= ours["proposed"]
                  and abs(s[2] - OUR_CHANGE) < 0.01), None)
    result["our_change_seen_after_s"] = round(heard - ours["proposed"], 3) if heard is not None else None
    result["band_peers_max"] = max((s[3] for s in samples), default=0)
    result["band_samples"] = len(samples)
    result["band_span_s"] = round(samples[-1][0] - samples[0][0], 1) if samples else 0.0
    result["our_bpm_changes"] = ours.get("bpm_changes", [])  # (value, hub source) as listeners saw them
    began = ours["boundaries"][0][0] if ours["boundaries"] else 0.0
    result["our_tempi"] = [[round(t - began, 2), round(bpm, 3)] for t, bpm in ours["tempi"]]
    return result


def bench_link(args) -> dict:
    import torch

    from immersions.bench.kit import environment

    seconds = args.seconds if args.seconds is not None else 120.0
    if seconds < 10:
        raise ImmersionsError(f"--seconds {seconds:g}: a Link run needs at least 10 s (a few loops)")
    began = time.perf_counter()
    doc = analyse(run_pair(seconds))
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    return {"benchmark": "link", **environment(torch.device("cpu")), "seconds": seconds, "bars": BARS,
            "load_average": [float(x) for x in load], "wall_s": round(time.perf_counter() - began, 1), **doc}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m immersions.bench.link")
    parser.add_argument("side", choices=["band", "ours"])
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--quantum", type=float, default=4.0 * BARS)
    parser.add_argument("--change-at", type=float, default=1e9)
    parser.add_argument("--bars", type=int, default=BARS)
    parser.add_argument("--propose-at", type=float, default=1e9)
    parser.add_argument("--naive", action="store_true")
    parser.add_argument("--out", required=True)
    parser.add_argument("--until", nargs="*", default=[], help="band: play until these files exist")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.side == "band":
        asyncio.run(_band(args.seconds, args.quantum, args.change_at, Path(args.out), [Path(p) for p in args.until]))
    else:
        _ours(args.seconds, args.bars, args.propose_at, not args.naive, Path(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
