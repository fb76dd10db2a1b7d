"""Ableton Link: the loop's start held on a shared bar, and two real Link peers.

The peers run only inside a private network namespace (`unshare -rn`), so Link's multicast
discovery never leaves it; where no such namespace can be made, that test is skipped with
the reason.
"""

import tracemalloc

import numpy as np
import pytest

from immersions.audio.mixing import loop_offset
from immersions.devices.grid import BarGrid
from immersions.devices.player import LoopRenderer
from immersions.control.link import fold_tempo, quantum_beats

from helpers import heard_clip

SR = 8000
T0 = 1000.0  # perf_counter seconds at which the renderer's frame 0 is heard


def clip(serial, samples):
    return heard_clip(serial, samples, SR)


def ramp(n):
    """Each sample says where in the loop it is (0 .. 0.5): a drop marks the loop's start."""
    return (0.5 * np.arange(n) / n).astype(np.float32)


def render(renderer, frames, block=160):
    out = []
    for _ in range(frames // block):
        out.append(renderer.render(block, T0 + renderer.frames / SR)[:, 0].copy())
    return np.concatenate(out)


def loop_starts(audio):
    return np.flatnonzero(np.diff(audio) < -0.2) + 1


# -- the pure parts ---------------------------------------------------------------------------------

def test_a_tempo_outside_our_range_is_folded_by_octaves_so_bars_still_line_up():
    assert fold_tempo(133.0, 60.0, 200.0) == (133.0, 1.0)
    assert fold_tempo(240.0, 60.0, 200.0) == (120.0, 2.0)  # two Link beats to one of ours
    assert fold_tempo(50.0, 60.0, 200.0) == (100.0, 0.5)
    assert quantum_beats(2) == 8.0 and quantum_beats(2, 2.0) == 16.0


def test_the_grid_says_where_in_the_bar_group_a_moment_falls():
    grid = BarGrid(t=10.0, beat=3.0, tempo=120.0, quantum=8.0)
    assert grid.fraction_at(10.5) == pytest.approx(0.5)  # beat 4 of 8
    assert grid.fraction_at(12.5) == pytest.approx(0.0, abs=1e-12)  # beat 8: a new group
    assert loop_offset(990, 10, 1000) == -20  # just before the start is behind it, round the loop
    assert loop_offset(30, 10, 1000) == 20


# -- the player held on the bar (no network: the grid is given) --------------------------------------------

def test_the_loop_starts_on_the_bar_and_stays_there():
    length = 4 * SR  # 2 bars at 120 BPM
    grid = BarGrid(t=T0, beat=1.3, tempo=120.0, quantum=8.0)  # the band is 1.3 beats into its bars
    r = LoopRenderer(SR, volume=1.0, crossfade=0.01)
    r.grid = grid
    r.offer(clip(1, ramp(length)))
    audio = render(r, 3 * length)
    starts = loop_starts(audio)
    assert len(starts) == 3
    for frame in starts:
        off = loop_offset(grid.fraction_at(T0 + frame / SR) * length, 0, length)
        assert abs(off) <= 2  # samples: a quarter of a millisecond
    assert r.realigns == 0  # on the bar from the first sample: nothing to move
    assert r.playhead_at(starts[1]).fraction == pytest.approx(0.0, abs=1e-3)  # the picture's clock agrees


def test_a_drift_off_the_bar_is_moved_back_once_without_a_click():
    length = 4 * SR
    tone = (0.5 * np.sin(2 * np.pi * 220 * np.arange(length) / SR)).astype(np.float32)
    r = LoopRenderer(SR, volume=1.0, crossfade=0.01)
    r.grid = BarGrid(T0, 0.0, 120.0, 8.0)
    r.offer(clip(1, tone))
    render(r, length + 1600)
    r.grid = BarGrid(T0 + 0.037, 0.0, 120.0, 8.0)  # the shared bar moved 37 ms later (drift, a late peer)
    render(r, 2 * length)
    assert r.realigns == 1
    natural = float(np.abs(np.diff(tone)).max())
    assert r.max_crossfade_jump < 1.5 * natural  # a crossfade between two places of the tone, no step
    # and now the loop starts on the new bar
    r2 = LoopRenderer(SR, volume=1.0, crossfade=0.01)
    r2.grid = BarGrid(T0, 0.0, 120.0, 8.0)
    r2.offer(clip(1, ramp(length)))
    render(r2, length + 1600)
    r2.grid = moved = BarGrid(T0 + 0.037, 0.0, 120.0, 8.0)
    audio = render(r2, 3 * length)
    later = [f + length + 1600 for f in loop_starts(audio)][-1]
    off = loop_offset(moved.fraction_at(T0 + later / SR) * length, 0, length)
    assert abs(off) <= 2


def test_a_new_clip_of_another_length_starts_on_the_bar_at_the_switch():
    # the band sped up: the next clip is shorter, and it starts where the band's bar is
    r = LoopRenderer(SR, volume=1.0, crossfade=0.01)
    r.grid = BarGrid(T0, 0.0, 120.0, 8.0)
    r.offer(clip(1, ramp(4 * SR)))
    render(r, 2 * SR)
    fast = BarGrid(T0 + 2.0, 4.0, 133.0, 8.0)  # from second 2, at 133 BPM
    r.grid = fast
    short = round(8 * 60 / 133 * SR)
    r.offer(clip(2, ramp(short)))
    audio = render(r, 3 * short + 4 * SR)
    starts = [f + 2 * SR for f in loop_starts(audio)]
    assert len(starts) >= 3
    for frame in starts[-2:]:  # the new clip's starts (the old one was moved onto the bar once, then switched)
        off = loop_offset(fast.fraction_at(T0 + frame / SR) * short, 0, short)
        assert abs(off) <= 2


@pytest.mark.parametrize("tempo", [126.0, 133.0, 100.0])
@pytest.mark.parametrize("another_old_clip", [False, True])
def test_after_a_tempo_change_the_old_clip_still_ends_on_the_new_bar(tempo, another_old_clip):
    # the band changes tempo 1.3 s into a loop; the dream engine has no clip at the new tempo yet
    # (or it hands over one more clip dreamt at the old tempo)
    length = 4 * SR  # 2 bars at 120 BPM
    r = LoopRenderer(SR, volume=1.0, crossfade=0.01)
    r.grid = BarGrid(T0, 0.0, 120.0, 8.0)
    r.offer(clip(1, ramp(length)))
    render(r, length + int(1.3 * SR))  # 65 blocks
    changed = BarGrid(T0 + 5.3, 10.6, tempo, 8.0)  # beat 10.6 at 5.3 s: the beat clock runs on unbroken
    r.grid = changed
    if another_old_clip:
        r.offer(clip(2, ramp(length)))
    bar = 8 * 60 / tempo * SR
    audio = render(r, int(2.2 * bar) // 160 * 160)
    starts = loop_starts(audio) + r.frames - len(audio)
    assert len(starts) >= 2
    for frame in starts:  # the first loop start after the change too
        phase = changed.fraction_at(T0 + frame / SR)
        off = min(phase, 1.0 - phase) * bar
        assert off <= 2, (frame, off)  # samples: a quarter of a millisecond
    assert r.realigns <= 3  # one move onto the new bar a loop, no more
    assert r.switches == int(another_old_clip)


def test_re_timing_the_loop_end_crossfades_without_a_click():
    length = 4 * SR
    tone = (0.5 * np.sin(2 * np.pi * 220 * np.arange(length) / SR)).astype(np.float32)
    for tempo in (126.0, 114.0):
        r = LoopRenderer(SR, volume=1.0, crossfade=0.01)
        r.grid = BarGrid(T0, 0.0, 120.0, 8.0)
        r.offer(clip(1, tone))
        render(r, length + 8000)
        r.grid = BarGrid(T0 + 5.0, 10.0, tempo, 8.0)
        render(r, 3 * length)
        assert r.realigns >= 1
        natural = float(np.abs(np.diff(tone)).max())
        assert r.max_crossfade_jump < 1.5 * natural


def test_the_re_timing_window_opens_before_a_short_clip_wraps_round():
    from immersions.audio.mixing import retime_window

    assert retime_window(32000, 32000, 2400) == 2400  # a clip as long as the bar group: the lead alone
    assert retime_window(32000, 30000, 2400) == 2400  # a longer clip: its tail is cut at the bar line
    assert retime_window(30000, 32000, 2400) == 4400  # a shorter one: before it would wrap round
    assert retime_window(10000, 32000, 2400) == 9000  # never most of the clip
    assert BarGrid(0.0, 0.0, 120.0, 8.0).seconds == 4.0


def test_a_clip_of_another_length_is_placed_so_its_start_or_its_end_is_on_the_bar():
    from immersions.audio.mixing import bar_position

    assert bar_position(0.25, 32000, 32000) == 8000  # as long as the bar group: in proportion
    assert bar_position(0.25, 32000, 36000) == 8000  # longer: its start on the bar line behind
    assert bar_position(0.25, 32000, 30000) == 8000
    assert bar_position(0.95, 32000, 30000) == 28400  # shorter, past its length: its end on the bar ahead
    assert bar_position(0.99, 32000, 36000) == 35680  # nearer the bar line ahead: its end on it


def test_holding_the_bar_allocates_nothing_in_the_callback():
    length = 4 * SR
    r = LoopRenderer(SR, volume=0.7, crossfade=0.05)
    r.grid = BarGrid(T0, 0.5, 120.0, 8.0)
    r.offer(clip(1, ramp(length)))
    render(r, 4096)
    r.offer(clip(2, ramp(length)))
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        for i in range(80):  # switches, moves onto the bar, crossfades, wraps, a tempo change
            if i == 20:
                r.grid = BarGrid(T0 + 0.05, 0.5, 120.0, 8.0)
            if i == 40:
                r.grid = BarGrid(T0 + 5.0, 10.5, 133.0, 8.0)
            r.render(1024, T0 + r.frames / SR)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert r.switches == 1 and r.realigns >= 1
    assert peak - before < 4096 * 4


# -- reading one side's loop starts on the band's clock (bench/link.py's analysis) -------------------------

def link_run(boundaries, joined, tempi=((100.0, 120.0), (101.2, 133.0))):
    """A recorded run: the band at 133 BPM from t=99 s (its bar groups of 8 beats start on whole beats
    from beat 0 at t=99), and our loop starts (time, loop length) as `_ours` writes them."""
    quantum, tempo = 8.0, 133.0
    samples = [(99.0 + 0.02 * i, 0.02 * i * tempo / 60.0, tempo, 1) for i in range(2000)]  # 40 s
    band = {"quantum": quantum, "changed": None, "samples": samples}
    ours = {"hold": True, "boundaries": [list(b) for b in boundaries], "tempi": [list(t) for t in tempi],
            "proposed": None, "joined": joined, "bpm_changes": [], "peers": 1, "realigns": 1, "underruns": 0,
            "late_callbacks": 0, "callbacks": 100}
    return {"band": band, "ours": ours}


def test_a_loop_start_before_the_peers_met_is_listed_but_not_held_against_the_bar():
    from immersions.bench.link import analyse

    bar = 8.0 * 60.0 / 133.0  # a bar group at 133 BPM: 3.609 s
    starts = [(100.3, 4.0)] + [(99.0 + k * bar + 0.002, bar) for k in range(1, 10)]  # the first: our own bar
    result = analyse(link_run(starts, joined=101.0))["ours"]
    assert result["before_peers"] == 1 and result["joined_s"] == 0.7
    assert result["loop_starts"][0][1] > 500.0  # still listed, as it was heard
    for summary in ("all", "settled", "after_change"):
        assert result[summary]["max_ms"] == pytest.approx(2.0, abs=0.01), summary
    assert result["all"]["loops"] == 9 and result["after_change"]["loops"] == 1

    late = starts[:3] + [(starts[3][0] + 0.05, bar)] + starts[4:]  # once the peers met, a start 50 ms late counts
    result = analyse(link_run(late, joined=101.0))["ours"]
    assert result["all"]["max_ms"] == pytest.approx(50.0 + 2.0, abs=0.01)
    never = analyse(link_run(starts, joined=None))["ours"]  # a side that never met a peer has no bar to be on
    assert never["before_peers"] == 10 and never["all"] == {"loops": 0}


# -- two real Link peers, in a private network namespace ----------------------------------------------------

@pytest.mark.slow  # 32 s of two peers playing: at least two loops settle between the three tempo changes
def test_two_peers_share_tempo_both_ways_and_our_loop_lands_on_the_shared_bar():
    from immersions.bench.link import BAND_CHANGE, BAND_TEMPO, OUR_CHANGE, analyse, namespace_problem, run_pair

    pytest.importorskip("aalink")
    problem = namespace_problem()
    if problem is not None:
        pytest.skip(f"Link peers run only inside a private network namespace: {problem}")
    result = analyse(run_pair(32.0, baseline=False))
    ours = result["ours"]
    assert ours["peers"] >= 1 and result["band_peers_max"] >= 1  # they found each other
    tempi = [bpm for _, bpm in result["our_tempi"]]
    assert BAND_TEMPO in tempi  # we took the session's tempo on joining
    assert tempi.index(BAND_CHANGE) > tempi.index(BAND_TEMPO)  # the band's change reached our bpm
    assert result["band_change_seen_after_s"] is not None and result["band_change_seen_after_s"] < 1.0
    assert result["our_change_seen_after_s"] is not None and result["our_change_seen_after_s"] < 1.0  # ours reached the band
    assert tempi[-1] == OUR_CHANGE
    # through the control hub, as MIDI feedback and OSC subscribers see it
    assert [BAND_TEMPO, "link"] in result["our_bpm_changes"] and [BAND_CHANGE, "link"] in result["our_bpm_changes"]
    assert [OUR_CHANGE, "osc"] in result["our_bpm_changes"]
    settled = ours["settled"]
    assert settled["loops"] >= 2
    assert settled["max_ms"] <= 10.0  # the loop's start on the shared bar
    # ... and the first loop start after each tempo change (joining at 133, the band's 126, our 128), while
    # the clip of the old tempo may still be playing
    after = ours["after_change"]
    assert after["loops"] >= 3 and after["max_ms"] <= 10.0, ours["loop_starts"]
    assert isinstance(ours["underruns"], int)  # reported, not asserted: this shared machine can stall any thread


def test_the_hud_line_says_peers_tempo_and_where_in_the_bars():
    from immersions.control.link import LinkStatus

    assert LinkStatus(True, 1, 133.0, 5.5, 8.0).line() == "link: 1 peer, 133.00 BPM, bar 2 beat 2 of 2"
    assert LinkStatus(True, 0, 120.0, 0.2, 8.0).line() == "link: 0 peers, 120.00 BPM, bar 1 beat 1 of 2"


def test_the_phase_bar_fills_through_the_loop_long_bar_group():
    from immersions.control.link import LinkStatus

    assert LinkStatus(True, 1, 133.0, 6.0, 8.0).fraction == pytest.approx(0.75)
    assert LinkStatus(False, 0, 120.0, 0.0, 0.0).fraction == 0.0


HUD_PROBE = '''
import json, sys, time
import imgui
import numpy as np
from moderngl_window.integrations.imgui import ModernGLRenderer
from immersions.control.link import LinkSession
from immersions.performance.gui import Overlay
from immersions.performance.performance import OfflineClock, Performance
from immersions.visual.gl import offscreen_context

model, done = sys.argv[1], sys.argv[2]
W, H = 1280, 720
ctx = offscreen_context()
perf = Performance(ctx, (W, H), OfflineClock(), model=model, device="cpu")
target = ctx.simple_framebuffer((W, H))
imgui.create_context()
imgui.get_io().ini_file_name = None
gui = Overlay(ctx, ModernGLRenderer(ctx=ctx, display_size=(W, H)))

def hud_rows():
    """Rows of the HUD's corner (right of the parameter panel) that the overlay drew on."""
    target.use()
    target.clear(0.0, 0.0, 0.0, 1.0)
    gui.draw(perf, 0.05)
    image = np.frombuffer(target.read(components=3, alignment=1), np.uint8).reshape(H, W, 3)
    return int((image[:, W - 330:].max(axis=(1, 2)) > 8).sum())

hud_rows()
without = hud_rows()
session = LinkSession(perf.controls).start()
gui.link = session  # as the perform and install windows hand it to their overlay
began = time.perf_counter()
while time.perf_counter() - began < 20 and not (session.status.peers >= 1 and perf.params["bpm"] == 133.0):
    perf.controls.apply()  # the session's tempo reaches bpm through the hub, as each frame applies it
    time.sleep(0.05)
lines, rows = [], []
for _ in range(3):
    rows.append(hud_rows())
    lines.append(session.status.line())
    time.sleep(0.3)
status = session.status
session.close()
print(json.dumps({"without": without, "with": rows, "lines": lines, "peers": status.peers, "tempo": status.tempo,
                  "fraction": status.fraction, "bpm": perf.params["bpm"]}))
open(done, "w").write("done")
'''


@pytest.mark.slow  # a model, an EGL context and a Link peer to meet
def test_the_hud_shows_a_real_link_peer_its_tempo_and_phase(micro_model_dir, tmp_path):
    """The overlay's HUD, drawn under EGL with a real LinkSession that met a bare Link peer (the
    band, 133 BPM), both inside one private network namespace."""
    import json
    import os
    import shlex
    import subprocess
    import sys

    from immersions.bench.link import NAMESPACE_SETUP, namespace_problem

    pytest.importorskip("aalink")
    problem = namespace_problem()
    if problem is not None:
        pytest.skip(f"Link peers run only inside a private network namespace: {problem}")
    done = tmp_path / "done"
    band = [sys.executable, "-m", "immersions.bench.link", "band", "--seconds", "60", "--quantum", "8",
            "--out", str(tmp_path / "band.json"), "--until", str(done)]
    ours = [sys.executable, "-c", HUD_PROBE, str(micro_model_dir), str(done)]
    script = "\n".join([NAMESPACE_SETUP, shlex.join(band) + " &", shlex.join(ours), "wait"])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    result = subprocess.run(["unshare", "-rn", "sh", "-c", script], env=env, capture_output=True, text=True,
                            timeout=300)
    lines = result.stdout.strip().splitlines()
    assert lines and lines[-1].startswith("{"), result.stderr[-2000:]
    seen = json.loads(lines[-1])
    assert seen["peers"] == 1 and seen["tempo"] == pytest.approx(133.0) and seen["bpm"] == 133.0
    for line in seen["lines"]:
        assert line.startswith("link: 1 peer, 133.00 BPM, bar ") and line.endswith(" of 2")  # the default 2 bars
    assert len(set(seen["lines"])) >= 2 or seen["fraction"] > 0.0  # the phase moves on
    # the HUD grew by the Link line and the phase bar (imgui sizes an auto-resizing window a frame late)
    assert all(rows >= seen["without"] + 20 for rows in seen["with"][1:]), seen


def test_without_aalink_the_error_says_how_to_add_link_where_immersions_runs(monkeypatch):
    """`pip install 'immersions[link]'` works only inside the project's environment: the one line
    names the interpreter that runs immersions, and the checkout's command."""
    import sys

    from immersions.control.link import _load_aalink
    from immersions.errors import ImmersionsError

    monkeypatch.setitem(sys.modules, "aalink", None)  # import aalink now fails, as where it is not installed
    with pytest.raises(ImmersionsError) as err:
        _load_aalink()
    message = str(err.value)
    assert f"{sys.executable} -m pip install 'aalink>=0.2.3'" in message and "\n" not in message
    assert ".venv/bin/pip install -e '.[link]'" in message
