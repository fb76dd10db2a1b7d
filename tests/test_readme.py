"""The README is tested (issue 31): every command in README.md's ```bash blocks runs here.

The commands are parsed from README.md when the tests run (a command may continue over lines
that end in a backslash; a trailing `# comment` is dropped; whitespace is normalized), and each
one must have an entry in COMMANDS below, keyed by the command exactly as parsed:

* `Run(...)`: the command in a shortened form (fewer steps and seconds, the micro model where
  the command takes `--model`, `--headless` for a window, outputs in a work folder), run as a
  user runs it: the installed `immersions` entry point of this environment, a real process, in
  a work folder that holds the checkout's `assets/` (so `assets/...` paths work as written), with
  HOME pointing at a home of its own (so `~/music` and `~/immersions-keys` are real folders of
  fixtures, and nothing lands in the real cache or config). Its exit status, the files it
  promises and a line of its output are checked.
* `Skip(reason, instead=Run(...))`: a command that cannot run here (a GPU, a MIDI controller,
  a USB sound card, the network, hours of training, the full-screen app that runs until quit),
  with its reason and, where it has one, the check that can run instead: usually its one-line
  error (`immersions: error: ...`, exit status 2) when what it needs is missing.

A command added to the README without an entry fails `test_every_readme_command_has_an_entry`,
which names it (and an entry whose command left the README fails it too). The commands run in
README order and share a work folder, as a reader's would: the `--resume` runs go on from the
training run above them, `blend` blends the models the training runs made; `after` names the
README commands an entry needs, which run first (once) when it is selected on its own with -k.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import wave
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from helpers import REPO

README = REPO / "README.md"
BIN = Path(sys.executable).parent  # the environment's entry points: immersions, torchrun, pip
TWO_SCREENS = "-screen 0 1280x720x24 -screen 1 1024x768x24 +xinerama"
HAS_XVFB = shutil.which("xvfb-run") is not None
HAS_SEQ = Path("/dev/snd/seq").exists()  # the ALSA sequencer, which every MIDI port needs on Linux
ONE_LINE = "immersions: error: "


def readme_commands(text: str | None = None) -> list[str]:
    """Every command in the README's ```bash blocks, in order and once each: continued lines
    joined, trailing `# comments` dropped, whitespace normalized."""
    text = README.read_text() if text is None else text
    commands, block, pending = [], None, ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("```"):
            block = stripped[3:].strip().lower() if block is None else None
            pending = ""
            continue
        if block not in ("bash", "sh", "shell", "console"):
            continue
        if stripped.startswith("#") and not pending:
            continue
        stripped = re.sub(r"(^|\s)#.*$", "", stripped).rstrip()  # a trailing comment
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        command = " ".join((pending + stripped).split())
        pending = ""
        if command and command not in commands:
            commands.append(command)
    return commands


# -- the table's two kinds of entry --------------------------------------------------------------

@dataclass(frozen=True)
class Run:
    """A command as it runs here. `argv` is shell words (quotes as in bash) in which `immersions`,
    `torchrun` and `pip` are this environment's, `~` is the test's home, and {model} (the micro
    model), {repo} (the checkout) and {port} (a free TCP port) are filled in. Run in the work folder."""

    argv: str
    expect: int | tuple[int, ...] = 0  # exit status (or the ones allowed)
    files: tuple[str, ...] = ()  # globs under the work folder (or ~/...) that must match after it
    says: tuple[str, ...] = ()  # substrings of stdout + stderr
    one_line: str | None = None  # stderr is exactly one line, starting with this
    check: Callable[["Done"], None] | None = None  # more checks on the result
    before: Callable[["Work"], None] | None = None  # makes the fixtures it needs in the work folder
    after: tuple[str, ...] = ()  # README commands that must have run first
    xvfb: str | None = None  # run under xvfb-run with these screens
    private_net: bool = False  # in a private network namespace (unshare -rn): NDI and Link stay in it
    env: dict[str, str] = field(default_factory=dict)  # more environment ({work} filled in)
    server: "Server | None" = None  # a process started first, stopped (Ctrl-C) after
    timeout: float = 300


@dataclass(frozen=True)
class Server:
    """A process the command talks to: started in the work folder, ready when its output says
    `ready`, interrupted as by Ctrl-C when the command is done."""

    argv: str
    ready: str


@dataclass(frozen=True)
class Skip:
    """A command that cannot run here, why, and what runs instead (its one-line error, say)."""

    reason: str
    instead: Run | None = None


@dataclass
class Done:
    run: Run
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str
    work: "Work"
    server_output: str = ""

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def json(self) -> dict:
        return json.loads(self.stdout[self.stdout.index("{"):])


# -- checks used by several entries --------------------------------------------------------------

def holds(condition: bool, what: object) -> None:
    assert condition, what


def lasts(done: "Done", name: str, seconds: float) -> None:
    with wave.open(str(done.work.root / name)) as w:
        assert w.getnframes() / w.getframerate() == pytest.approx(seconds, abs=0.01), name


def trained_to(step: int) -> Callable[[Done], None]:
    def check(done: Done) -> None:
        log = (done.work.root / "models/house/train_log.csv").read_text().splitlines()
        assert log[-1].split(",")[0] == str(step), log[-3:]
    return check


def headless_state(done: Done) -> dict:
    doc = done.json()
    assert doc["seconds"] > 0 and "params" in doc, doc
    return doc


def has_keys(done: Done, *keys: str) -> None:
    doc = done.json()
    assert set(keys) <= set(doc), sorted(doc)


def installation_figures(done: Done) -> None:
    doc = done.json()
    for key in ("dream_steps", "nan_resets", "renderer"):
        assert key in doc, sorted(doc)


def frames_sent(done: Done) -> None:
    sent = re.search(r"video out closed: (\d+) frames sent", done.stderr)
    assert sent and int(sent.group(1)) > 0, done.stderr[-2000:]


def served(done: Done) -> None:
    assert re.search(r"connected to tcp://127\.0\.0\.1:\d+", done.stderr), done.stderr[-2000:]
    assert "dreaming on 1 worker" in done.server_output, done.server_output[-2000:]  # the server dreamed for it
    # its closing line counts the frames it sent
    frames = re.search(r"\((\d+) frames sent", done.server_output)
    assert frames is not None and int(frames.group(1)) > 0, done.server_output[-6000:]


def private_net_works() -> bool:
    if shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", "-rn", "true"], capture_output=True).returncode == 0


def needs_private_net(work: "Work") -> None:
    if not private_net_works():
        pytest.skip("no private network namespace here (unshare -rn is not allowed)")


# -- fixtures the commands' placeholders stand for -----------------------------------------------

def write_tracks(folder: Path, seeds: range, seconds: float) -> None:
    from immersions.audio.io import write_wav
    from immersions.synth import render_track

    folder.mkdir(parents=True, exist_ok=True)
    for seed in seeds:
        if not (folder / f"track{seed}.wav").exists():  # made once, for every command that reads them
            write_wav(folder / f"track{seed}.wav", render_track(seed, seconds, 16000), 16000)


def music_train(work: "Work") -> None:
    """What `fetch-music.sh music/train ...` leaves: a folder per package, tracks in each."""
    write_tracks(work.root / "music/train/house-a", range(800, 802), 10)
    write_tracks(work.root / "music/train/house-b", range(810, 812), 10)


def music_probe(work: "Work") -> None:
    """What `fetch-music.sh music/probe wesnoth-1.16-music` leaves: tracks long enough to cut
    training clips from their first 70 % and a test clip from the rest."""
    write_tracks(work.root / "music/probe/wesnoth-1.16-music", range(900, 903), 40)


def music_full(work: "Work") -> None:
    """What `fetch-music.sh music/full` leaves, at 48 kHz as much music is (resampled to 44.1 kHz once)."""
    from immersions.audio.io import write_wav
    from immersions.synth import render_track

    folder = work.root / "music/full/house-c"
    folder.mkdir(parents=True, exist_ok=True)
    for seed in (820, 821):
        if not (folder / f"track{seed}.wav").exists():
                write_wav(folder / f"track{seed}.wav", render_track(seed, 10, 48000), 48000)


def a_take(work: "Work") -> None:
    """What `immersions midi record take.mid` writes (it needs a controller): a take on the
    BCF2000 that names its map; the layer knob goes down, then keep turns on."""
    import mido

    from immersions.control.automation import write_automation

    write_automation(work.root / "take.mid", [
        (0.2, mido.Message("control_change", channel=0, control=3, value=0)),  # knob 3: layer
        (0.4, mido.Message("control_change", channel=0, control=75, value=127)),  # keep on
    ], midi_map="bcf2000")


def a_rehearsal(work: "Work") -> None:
    from immersions.audio.io import write_wav
    from immersions.synth import render_track

    write_wav(work.root / "rehearsal.wav", render_track(5, 6, 44100), 44100)


def another_model(work: "Work") -> None:
    if not (work.root / "other").exists():
        shutil.copytree(work.model, work.root / "other")


def laptop_keys(work: "Work") -> None:
    """`immersions keys generate` says: copy clients/laptop to the performing laptop."""
    if not (work.root / "laptop-keys").exists():
        shutil.copytree(work.home / "immersions-keys/clients/laptop", work.root / "laptop-keys")


def fresh(name: str) -> Callable[["Work"], None]:
    """Removes what an earlier command left at `name`, so that the files checked are this one's."""
    return lambda work: shutil.rmtree(work.root / name, ignore_errors=True)


def one_line_error(argv: str, words: str, **kw) -> Run:
    return Run(argv, expect=2, one_line=ONE_LINE + words, **kw)


def headless(argv: str, seconds: int = 2) -> str:
    """A `perform` command without a window: offscreen, offline sound, the micro model."""
    return f"{argv} --headless --seconds {seconds} --model {{model}} --device cpu"


def xvfb_or_no_display(argv: str, says: str, screens: str = "-screen 0 1280x720x24") -> Run | Skip:
    """A window under Xvfb where xvfb-run is installed; else the one-line error without a display."""
    if HAS_XVFB:
        return Run(argv, says=(says,), xvfb=screens)
    return Skip("needs a display (xvfb-run is not installed)", instead=one_line_error(argv, "cannot "))


FETCH_NO_DEBS = {"FETCH_MUSIC_DEBS": "{work}/no-debs"}  # the script's offline mode, with no .deb files


def fetch_instead(argv: str, first_package: str) -> Run:
    """Offline and with no packages to hand, the script gets as far as fetching: every package the
    README names is one it may fetch (else it stops with exit status 2 naming it)."""
    return Run(argv, expect=1, env=FETCH_NO_DEBS, before=lambda w: (w.root / "no-debs").mkdir(exist_ok=True),
               check=lambda d: _one_line(d, f"fetch-music: error: no {first_package}_*.deb in "))


def _one_line(done: Done, start: str) -> None:
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(start), done.stderr[-2000:]


TRAIN_1200 = ("immersions train --preset tiny --data synth --steps 1200 --batch-size 16 --lr 6e-4 --negatives times "
              "--synth-seconds 192 --out models/house")
TRAIN_2400 = TRAIN_1200.replace("1200", "2400") + " --resume"
TRAIN_REAL = ("immersions train --init models/house --data music/train:3 --data synth:1 --synth-seconds 192 "
              "--steps 1600 --batch-size 16 --lr 3e-4 --negatives times --out models/real")
TRAIN_FULL = ("immersions train --init models/blend --preset full --data music/full:3 --data synth:1 "
              "--synth-seconds 192 --steps 20000 --warmup 200 --batch-size 16 --lr 3e-4 --negatives times "
              "--save-every 100 --out models/full")
BLEND = ("immersions blend models/house models/real --weight 0.75 --data music/train:3 --data synth:1 "
         "--out models/blend")
KEYS = "immersions keys generate ~/immersions-keys --name laptop"
SHORT_TRAIN = "--batch-size 2 --synth-seconds 8 --synth-tracks 2"  # a micro run's corpus: two 8-s tracks
MODEL_FILES = ("config.json", "model.safetensors", "stats.safetensors")
FETCH_TRAIN = ("bash scripts/fetch-music.sh music/train warzone2100-music ufoai-music hyperrogue-music "
               "planetblupi-music-ogg asc-music drascula-music fb-music-high")
FETCH_PROBE = "bash scripts/fetch-music.sh music/probe wesnoth-1.16-music"
RENDER_SCORES = "bash scripts/render-scores.sh music/scores --hours 6"
MIDI = "needs a MIDI controller, and the ALSA sequencer (/dev/snd/seq) that MIDI ports need on Linux"


def midi(short: str, controller: bool = True) -> Run | Skip:
    """A MIDI command: without the ALSA sequencer, its one-line error; with it, `midi ports` runs
    and a command that needs a controller runs or says in one line that there is none."""
    if not HAS_SEQ:
        return Skip(MIDI, instead=one_line_error(short, "the MIDI backend cannot start"))
    if not controller:
        return Run(short)
    return Skip("needs a MIDI controller", instead=Run(short, expect=(0, 2), check=lambda d: holds(
        d.returncode == 0 or d.stderr.strip().startswith(ONE_LINE + "no MIDI input"), d.stderr[-2000:])))


def gpu_serve() -> Run | Skip:
    short = "immersions serve --bind tcp://127.0.0.1:{port} --keys ~/immersions-keys --gpus all --model {model} --seconds 5"
    try:
        import torch

        gpu = torch.cuda.is_available()
    except Exception:
        gpu = False
    if gpu:
        return Run(short, after=(KEYS,), says=("server ready",))
    return Skip("`--gpus all` needs a CUDA GPU (the pair serve + perform --server runs on the CPU below)",
                instead=one_line_error(short, "--gpus all: no CUDA GPU is visible here", after=(KEYS,)))


# -- the table: every README command ---------------------------------------------------------------

COMMANDS: dict[str, Run | Skip] = {
    # Quickstart
    "bash scripts/start.sh": Skip(
        "sets the machine up (Debian packages with apt-get, a .venv, torch from the network) and ends in "
        "the full-screen performance, which runs until quit; `immersions perform` below runs that step"),
    "bash scripts/test.sh": Skip("runs this test suite, this test included (CI runs it: .ci/run)"),
    # the procedural house corpus
    "immersions synth --seed 1 --seconds 60 --out house.wav --png house.png": Run(
        "immersions synth --seed 1 --seconds 60 --out house.wav --png house.png",  # as written: it is quick
        files=("house.wav", "house.png"), says=("wrote house.wav", "wrote house.png"),
        check=lambda d: lasts(d, "house.wav", 60.0)),
    # training: the three runs of models/house, each a little longer, and the resumed ones
    TRAIN_1200: Run(
        f"immersions train --preset micro --data synth --steps 1 {SHORT_TRAIN} --lr 6e-4 --negatives times "
        "--out models/house",
        files=tuple(f"models/house/{f}" for f in (*MODEL_FILES, "train_log.csv", "train_plot.png", "train_state.json")),
        check=trained_to(1)),
    TRAIN_2400: Run(
        f"immersions train --preset micro --data synth --steps 2 {SHORT_TRAIN} --lr 6e-4 --negatives times "
        "--out models/house --resume",
        after=(TRAIN_1200,), says=("resuming models/house at step 1",), check=trained_to(2)),
    TRAIN_1200.replace("1200", "3600") + " --resume": Skip(
        "the `--steps 2400 --resume` command above with more steps: that one runs (a resumed run going on)"),
    "torchrun --nproc_per_node 4 -m immersions train --preset seed --data /data/house --steps 100000 --out runs/seed": Run(
        "torchrun --nproc_per_node 2 -m immersions train --preset micro --data ~/music --steps 1 --batch-size 2 "
        "--out runs/seed",
        files=tuple(f"runs/seed/{f}" for f in (*MODEL_FILES, "train_log.csv")), says=("trained micro for 1 steps",)),
    # the corpus cache (~/music: a folder of WAVs in the test's home)
    "immersions corpus build ~/music --rate 16000": Run(
        "immersions corpus build ~/music --rate 16000",
        files=("~/.cache/immersions/corpus/music-*-16000hz/manifest.json",),
        says=("3 files, 0.01 h at 16000 Hz", "codecs: pcm_s16le")),
    "immersions corpus info ~/music": Run(
        "immersions corpus info ~/music", after=("immersions corpus build ~/music --rate 16000",),
        says=("3 files, 0.01 h at 16000 Hz", "codecs: pcm_s16le")),
    # real music to train and probe on
    FETCH_TRAIN: Skip("downloads Debian's game-music packages (hundreds of MB) over the network",
                      instead=fetch_instead(FETCH_TRAIN.replace("scripts/", "{repo}/scripts/"), "warzone2100-music")),
    FETCH_PROBE: Skip("downloads a Debian music package (100 MB) over the network",
                      instead=fetch_instead(FETCH_PROBE.replace("scripts/", "{repo}/scripts/"), "wesnoth-1.16-music")),
    "immersions probe --data music/probe --tracks 15 --held-out": Run(
        "immersions probe --model {model} --data music/probe --tracks 2 --held-out", before=music_probe,
        says=("held out", "untrained")),
    TRAIN_REAL: Run(
        f"immersions train --init models/house --data music/train:3 --data synth:1 --steps 1 {SHORT_TRAIN} "
        "--lr 3e-4 --negatives times --out models/real",
        after=(TRAIN_1200,), before=music_train, files=tuple(f"models/real/{f}" for f in MODEL_FILES)),
    BLEND: Run(
        "immersions blend models/house models/real --weight 0.75 --data music/train:3 --data synth:1 "
        "--stats-clips 4 --out models/blend",
        after=(TRAIN_REAL,), files=tuple(f"models/blend/{f}" for f in (*MODEL_FILES, "layout.npz"))),
    # the full-band ear: micro's widths on the 44.1-kHz front end (micro-full), from the blend above
    "bash scripts/fetch-music.sh music/full": Skip(
        "downloads fifteen Debian game-music packages (18 h of music, GBs) over the network",
        instead=fetch_instead("bash {repo}/scripts/fetch-music.sh music/full", "warzone2100-music")),
    RENDER_SCORES: Skip(
        "renders 6 hours of scores (about 10 minutes on 2 cores)",
        instead=Run("bash {repo}/scripts/render-scores.sh music/scores --hours 0.01 --limit 8", timeout=600,
                    files=("music/scores/copyright", "music/scores/*/*.flac"), says=("pieces,",))),
    TRAIN_FULL: Run(
        f"immersions train --init models/blend --preset micro-full --data music/full:3 --data synth:1 --steps 1 "
        f"--warmup 200 {SHORT_TRAIN} --lr 3e-4 --negatives times --save-every 1 --out models/full",
        after=(BLEND,), before=music_full,
        files=tuple(f"models/full/{f}" for f in (*MODEL_FILES, "train_state.json", "train_state.safetensors")),
        check=lambda d: holds(json.loads((d.work.root / "models/full/config.json").read_text())["model"]["preset"]
                              == "micro-full", "not a micro-full model")),
    TRAIN_FULL + " --resume": Run(
        f"immersions train --init models/blend --preset micro-full --data music/full:3 --data synth:1 --steps 2 "
        f"--warmup 200 {SHORT_TRAIN} --lr 3e-4 --negatives times --save-every 1 --out models/full --resume",
        after=(TRAIN_FULL,), says=("resuming models/full at step 1",),
        check=lambda d: holds((d.work.root / "models/full/train_log.csv").read_text().splitlines()[-1]
                              .startswith("2,"), "not trained to step 2")),
    "immersions stats --model models/full --data music/full:3 --data synth:1": Run(
        "immersions stats --model models/full --data music/full:3 --data synth:1 --clips 4",
        after=(TRAIN_FULL,), before=lambda w: (w.root / "models/full/stats.safetensors").unlink(missing_ok=True),
        files=("models/full/stats.safetensors",)),
    "immersions layout --model models/full": Run(
        "immersions layout --model models/full", after=(TRAIN_FULL,), files=("models/full/layout.npz",)),
    "immersions probe --model full --data music/probe --tracks 15 --held-out --json": Run(
        # `full` is models/full; it does not ship yet, so the one trained above stands in for it
        "immersions probe --model models/full --data music/probe --tracks 2 --held-out --json",
        after=(TRAIN_FULL,), before=music_probe, check=lambda d: holds(d.json()["n_tracks"] == 2, d.stdout[:2000])),
    # dreaming
    'immersions dream --layer "enc 5 conv 2" --channel 0.3:0.1 --pitch 0.5:1 --start groove --steps 100 --out dream.wav': Run(
        'immersions dream --model {model} --layer "enc 5 conv 2" --channel 0.3:0.1 --pitch 0.5:1 --start groove '
        "--steps 2 --out dream.wav",
        files=("dream.wav",), says=("-> dream.wav",)),
    "immersions dream --journey assets/journeys/example.toml --out journey/": Run(
        "immersions dream --model {model} --journey assets/journeys/example.toml --out journey/ --steps 1 --seed 2",
        before=fresh("journey"), check=lambda d: _journey_stages(d)),
    "immersions dream --journey assets/journeys/example.toml --out journey/ --steps 5 --seed 2": Skip(
        "the journey above with its steps and seed given on the command line: the shortened run above is this "
        "command (`--steps 1 --seed 2`)"),
    # the map
    "immersions layout --png layout.png": Run(
        "immersions layout --model {model} --png layout.png", files=("layout.png",),
        check=lambda d: holds((d.work.model / "layout.npz").is_file(), "no layout.npz beside the model")),
    "immersions layout --preset seed --json": Run(
        "immersions layout --preset micro --json", files=("~/.cache/immersions/preset-micro/layout.npz",),
        check=lambda d: holds(d.json()["nodes"] == 4032, d.stdout[:2000])),  # micro's graph
    # performing
    "immersions perform": xvfb_or_no_display(
        "immersions perform --model {model} --seconds 3 --device cpu", "performance closed after"),
    'immersions perform --windowed --size 1600x900 --audio-device "USB"': Skip(
        "needs a USB audio interface (and a display)",
        instead=one_line_error('immersions perform --windowed --size 1600x900 --audio-device "USB" --model {model} '
                               "--seconds 2", "no audio output 'USB'")),
    "immersions devices": Run("immersions devices", says=("outputs (perform --audio-device):", "inputs (perform --input):")),
    "immersions render --frames 90 --size 1280x720 --out render/": Run(
        "immersions render --model {model} --frames 3 --size 320x180 --seconds 1 --out render/", before=fresh("render"),
        files=("render/frame_00000.png", "render/frame_00002.png", "render/heard.wav"),
        check=lambda d: lasts(d, "render/heard.wav", 1.0)),
    # video out and monitors
    "immersions monitors": xvfb_or_no_display("immersions monitors", "1: monitor 1  1024x768", TWO_SCREENS),
    "immersions perform --monitor 1": xvfb_or_no_display(
        "immersions perform --monitor 1 --model {model} --seconds 3 --device cpu", "performance closed after", TWO_SCREENS),
    "immersions perform --video-out ndi:Immersions": Run(
        headless("immersions perform --video-out ndi:Immersions", 3), private_net=True,
        says=("NDI source",), check=frames_sent),
    "immersions install --monitor 1 --video-out v4l2:/dev/video2": Skip(
        "needs a second monitor and a v4l2loopback device at /dev/video2 (sudo modprobe v4l2loopback)",
        instead=None if Path("/dev/video2").exists() else one_line_error(
            "immersions install --monitor 1 --video-out v4l2:/dev/video2 --state-dir state",
            "no video device /dev/video2")),
    "immersions render --frames 300 --video-out ndi": Run(
        "immersions render --model {model} --frames 3 --size 320x180 --seconds 1 --video-out ndi",
        private_net=True, before=fresh("render"), files=("render/frame_00002.png",), check=frames_sent),
    # the control surface
    "immersions perform --midi BCF --map bcf2000 --osc 9000": Run(
        headless("immersions perform --midi BCF --map bcf2000 --osc {port} --json"),
        says=("OSC listening on 127.0.0.1:",),
        check=lambda d: holds("BCF2000" in headless_state(d)["midi"]["map"], d.stdout)),
    "immersions perform --model default --model other": Run(
        "immersions perform --headless --seconds 2 --device cpu --model {model} --model other --json",
        before=another_model, check=lambda d: holds(headless_state(d)["models"] == ["micro", "other"], d.stdout)),
    "immersions midi ports": midi("immersions midi ports", controller=False),
    "immersions midi monitor": midi("immersions midi monitor --seconds 1"),
    "immersions midi record take.mid --seconds 60": midi("immersions midi record take.mid --seconds 1"),
    "immersions perform --headless --seconds 30 --automation take.mid --state-out state.json": Run(
        "immersions perform --headless --seconds 2 --device cpu --model {model} --automation take.mid "
        "--state-out state.json",
        before=a_take, files=("state.json",), check=lambda d: _automation(d)),
    # Ableton Link
    ".venv/bin/pip install -e '.[link]'": Skip(
        "installs from the package index (the network) into the .venv this suite runs from; offline, pip finds "
        "the installed package's `link` extra and its aalink",
        instead=Run("pip install --no-index --dry-run 'immersions[link]'", says=("aalink",))),
    "IMMERSIONS_EXTRAS=link bash scripts/setup.sh": Skip(
        "sets the machine up: Debian packages (apt-get, as root) and `pip install -e .[link]` from the network, "
        "into the .venv this suite runs from"),
    "immersions perform --link": Run(
        headless("immersions perform --link"), private_net=True, says=("Ableton Link on",)),
    "immersions bench link --seconds 120 --json": Run(
        "immersions bench link --seconds 10 --json", before=needs_private_net,  # it makes its own namespace
        check=lambda d: has_keys(d, "ours", "naive", "band_tempo")),
    # sound in
    'immersions perform --input "USB" --osc 9000': Run(  # no such input here: one warning, and it plays on
        headless('immersions perform --input "USB" --osc {port}'),
        says=("no sound in (USB: no audio input 'USB'", "OSC listening on 127.0.0.1:")),
    "immersions perform --input rehearsal.wav": Run(
        headless("immersions perform --input rehearsal.wav"), before=a_rehearsal,
        says=("sound in: file rehearsal.wav",)),
    "immersions bench listen --json": Run(
        "immersions bench listen --json --model {model} --repeats 1",
        check=lambda d: has_keys(d, "alone", "while_dreaming", "baseline_one_window")),
    # installation mode
    'immersions install --open 10:00 --close 18:00 --monitor 1 --audio-device "USB"': Skip(
        "needs a second monitor and a USB audio interface, and runs for weeks",
        instead=one_line_error('immersions install --open 10:00 --close 18:00 --monitor 1 --audio-device "USB" '
                               "--state-dir state", "no audio output 'USB'")),
    "immersions install --scenes assets/scenes/example.toml": Run(
        "immersions install --scenes assets/scenes/example.toml --headless --seconds 4 --json --model {model} "
        "--state-dir state", check=installation_figures),
    'immersions install --input "USB"': Run(  # no such input here: one warning, and the piece plays on
        'immersions install --input "USB" --headless --seconds 3 --json --model {model} --state-dir state',
        says=("no sound in (USB: no audio input 'USB'",), check=installation_figures),
    "immersions install --headless --seconds 60 --json": Run(
        "immersions install --headless --seconds 4 --json --model {model} --state-dir state", check=installation_figures),
    "immersions bench soak --minutes 60 --json": Run(
        "immersions bench soak --minutes 0.1 --json --model {model}",
        check=lambda d: has_keys(d, "samples", "growth_after_warmup", "install")),
    # remote dreaming
    KEYS: Run(KEYS, files=("~/immersions-keys/server.key", "~/immersions-keys/server.key_secret",
                           "~/immersions-keys/authorized/laptop.key", "~/immersions-keys/clients/laptop/client.key")),
    "immersions serve --bind tcp://0.0.0.0:5555 --keys ~/immersions-keys --gpus all": gpu_serve(),
    "immersions perform --server tcp://gpu-box:5555 --keys laptop-keys/ --fallback-local": Run(
        "immersions perform --server tcp://127.0.0.1:{port} --keys laptop-keys/ --fallback-local "
        "--headless --seconds 15 --device cpu --model {model}",
        after=(KEYS,), before=laptop_keys, check=served,
        server=Server("immersions serve --bind tcp://127.0.0.1:{port} --keys ~/immersions-keys --model {model}",
                      ready="server ready")),
}


def _journey_stages(done: Done) -> None:
    import tomllib

    stages = tomllib.loads((REPO / "assets/journeys/example.toml").read_text())["stage"]
    wavs = sorted((done.work.root / "journey").glob("*.wav"))
    assert len(wavs) == len(stages), [w.name for w in wavs]


def _automation(done: Done) -> None:
    doc = json.loads((done.work.root / "state.json").read_text())
    assert doc["automation"]["replayed"] == 2 and doc["automation"]["map"] == "bcf2000", doc["automation"]
    assert doc["params"]["layer"] == 0.0 and doc["params"]["keep"] is True


# -- running them ----------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Work:
    """The reader's folder (cwd for every command) and home, shared by the module's commands."""

    def __init__(self, root: Path, home: Path, model: Path):
        self.root, self.home, self.model = root, home, model
        self.done: dict[str, Done | BaseException] = {}
        (root / "assets").symlink_to(REPO / "assets")
        write_tracks(home / "music", range(700, 703), 12)  # ~/music: three tracks to train on
        drop = ("DISPLAY", "WAYLAND_DISPLAY", "XDG_CACHE_HOME", "XDG_CONFIG_HOME", "IMMERSIONS_CACHE",
                "IMMERSIONS_PRESETS", "IMMERSIONS_MODELS", "IMMERSIONS_ASSETS", "MIDO_BACKEND")
        self.env = {k: v for k, v in os.environ.items() if k not in drop}
        self.env.update(HOME=str(home), IMMERSIONS_CACHE=str(home / ".cache/immersions"), PYTHONUNBUFFERED="1")

    def words(self, argv: str, port: int) -> list[str]:
        text = argv.format(model=self.model, repo=REPO, port=port)
        words = shlex.split(text)
        words = [str(self.home) + w[1:] if w == "~" or w.startswith("~/") else w for w in words]
        if words[0] in ("immersions", "torchrun", "pip"):
            words[0] = str(BIN / words[0])
        return words

    def path(self, pattern: str) -> list[Path]:
        if pattern.startswith("~/"):
            return sorted(self.home.glob(pattern[2:]))
        return sorted(self.root.glob(pattern))

    def ensure(self, command: str) -> None:
        """A README command another one needs, run first (once)."""
        if command not in self.done:
            entry = COMMANDS[command]
            assert isinstance(entry, Run), f"{command!r} is needed but does not run here"
            try:
                self.run(entry, command)
            except (Exception, pytest.fail.Exception, pytest.skip.Exception) as err:
                self.done[command] = err
        if isinstance(self.done[command], BaseException):
            pytest.fail(f"needs `{command}`, which failed: {self.done[command]}")

    def run(self, entry: Run, command: str | None = None) -> Done:
        for needed in entry.after:
            self.ensure(needed)
        if entry.before:
            entry.before(self)
        if entry.private_net:
            needs_private_net(self)
        port = free_port()
        argv = self.words(entry.argv, port)
        prefix = []
        if entry.xvfb:
            prefix = ["xvfb-run", "-a", "-s", entry.xvfb]
        elif entry.private_net:
            prefix = ["unshare", "-rn"]
        env = {**self.env, **{k: v.format(work=self.root) for k, v in entry.env.items()}}
        server, said, server_output = None, [], ""
        try:
            if entry.server:
                server, said = start_server(self.words(entry.server.argv, port), self.root, env)
                wait_for_line(server, said, entry.server.ready, timeout=120)
            returncode, stdout, stderr = run_process(prefix + argv, self.root, env, entry.timeout)
        finally:
            if server:
                server_output = stop(server, said)
        done = Done(entry, argv, returncode, stdout, stderr, self, server_output)
        check(done)
        if command:
            self.done[command] = done
        return done


def start_server(argv: list[str], cwd: Path, env: dict) -> tuple[subprocess.Popen, list[str]]:
    """Start a process whose output (stdout and stderr) a thread collects, line by line."""
    proc = subprocess.Popen(argv, cwd=cwd, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    lines: list[str] = []
    proc.reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)  # ends at EOF
    proc.reader.start()
    return proc, lines


def wait_for_line(proc: subprocess.Popen, lines: list[str], words: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not any(words in line for line in list(lines)):
        if proc.poll() is not None:
            time.sleep(0.5)  # the last lines
            pytest.fail(f"the server stopped before it was ready (exit {proc.returncode}): {''.join(lines)[-2000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"the server was not ready after {timeout:g} s: {''.join(lines)[-2000:]}")
        time.sleep(0.1)


def stop(proc: subprocess.Popen, lines: list[str]) -> str:
    """Interrupt a process we started (as Ctrl-C does); all it said."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        lines.append("[test_readme: still running 60 s after Ctrl-C, killed]\n")
    proc.reader.join(30)  # every line the process wrote, up to the pipe's end (a fixed 0.2 s could miss the last)
    return "".join(lines)


def run_process(argv: list[str], cwd: Path, env: dict, timeout: float) -> tuple[int, str, str]:
    proc = subprocess.Popen(argv, cwd=cwd, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # its own session: the command and whatever it started
        stdout, stderr = proc.communicate()
        pytest.fail(f"`{shlex.join(argv)}` was still running after {timeout:g} s: {stderr[-2000:]}")
    return proc.returncode, stdout, stderr


def check(done: Done) -> None:
    entry, said = done.run, f"`{shlex.join(done.argv)}` (exit {done.returncode}):\n{done.stderr[-3000:]}"
    assert done.returncode in (entry.expect if isinstance(entry.expect, tuple) else (entry.expect,)), said
    if entry.one_line is not None:
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(entry.one_line), said
    for words in entry.says:
        assert words in done.output, f"{words!r} not said by {said}"
    for pattern in entry.files:
        assert done.work.path(pattern), f"{pattern} not written by {said}"
    if entry.check:
        entry.check(done)


# -- the tests -------------------------------------------------------------------------------------

def test_the_parser_reads_commands_as_a_reader_copies_them():
    text = "\n".join(["text", "```bash", "# a comment line", "immersions a   --b 1     # what it does",
                      "immersions c \\", "    --d 2 \\", "    --e     # joined", "immersions a --b 1", "```",
                      "```", "not bash", "```", "  ```bash", "  torchrun x", "  ```"])
    assert readme_commands(text) == ["immersions a --b 1", "immersions c --d 2 --e", "torchrun x"]


def test_every_readme_command_has_an_entry():
    commands = readme_commands()
    missing = [c for c in commands if c not in COMMANDS]
    stale = [c for c in COMMANDS if c not in commands]
    assert not missing, "README commands with no entry in tests/test_readme.py COMMANDS:\n" + "\n".join(missing)
    assert not stale, "entries in tests/test_readme.py COMMANDS no longer in the README:\n" + "\n".join(stale)
    for command, entry in COMMANDS.items():
        assert isinstance(entry, (Run, Skip)) and (not isinstance(entry, Skip) or entry.reason), command


@pytest.fixture(scope="module")
def work(tmp_path_factory, model_dir) -> Work:
    base = tmp_path_factory.mktemp("readme")
    (base / "work").mkdir()
    (base / "home").mkdir()
    return Work(base / "work", base / "home", model_dir)


def _id(command: str) -> str:
    return re.sub(r"[^\w.:/=-]+", "_", command)[:80]


@pytest.mark.slow
@pytest.mark.parametrize("command", readme_commands(), ids=_id)
def test_readme_command(command, work):
    entry = COMMANDS.get(command)
    assert entry is not None, f"README command with no entry in COMMANDS: {command}"
    if isinstance(entry, Skip):
        if entry.instead is None:
            pytest.skip(f"{command}: {entry.reason}")
        work.run(entry.instead)  # what can run here: the one-line error, an offline check
        return
    if command in work.done:  # it ran first, for a command after it that was selected too
        if isinstance(work.done[command], BaseException):
            raise work.done[command]
        return
    work.run(entry, command)
