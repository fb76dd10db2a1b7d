"""The performance: a model, its map, the dream engine, the loop player and the renderer,
on one clock. `immersions perform` drives it from a window, `immersions render` from an
offline loop; both call the same `frame()`.

The dream thread offers each new DreamFrame to the player (which prepares it there and
takes it at the loop end). Per display frame, on the main thread:
1. the player says which clip is heard at the speaker *now*, and where in its loop;
2. that clip's activation table goes to the GPU if it is not there yet (once per clip);
3. the renderer draws the map at that playhead.
So the picture shows the neurons of the sound that is heard, where it is heard.

With the room's sound in (`sound_in`, a SoundIn) and `listen` on, step 2 takes the newest
ListenFrame instead (the network's response to the last loop-length of input, from the
listen thread) and step 3 draws it at its own moment; dreaming goes on meanwhile. The
`capture` action takes the last `capture_bars` bars of input at the next bar line of the
heard loop, as the start clip or as the clip `mix_original` blends in (`capture_to`).

Two decks (see `DeckState`): deck A is the one there is at the start. Deck B comes when the
performer first edits it (`deck` = B), moves the crossfader or fades (`fade_bars`), with the
edited deck's settings, selection and model, and from there on each deck has its own selection,
start clip, dream state, loop and model; the parameters that are not the dream's or the
selection's (sound, visuals, tempo) are shared. `deck` says which deck the controls edit:
`engine`, `loaded`, `start_name` and the dream's parameters in `params` are that deck's, and the
other deck's wait in `decks`. While there are two, the deck heard (`dream_decks` = off_air) holds
its loop and only the deck off air dreams; with both, both dream.
"""

from __future__ import annotations

import logging
import re
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from immersions.audio.mixing import fader_gains
from immersions.devices.player import DeckControls, LoopRenderer, Playhead, SILENT
from immersions.devices.recorder import record
from immersions.control.hub import DECK_SWITCH, FADE, ControlHub
from immersions.registry import (DECK_NAMES, DECKS, DREAM, ENGINE_CONSUMERS, PLAYER, REGISTRY, SELECT,
                                 Snapshot, bar_seconds, loop_length)
from immersions.dream.engine import DreamEngine
from immersions.frames import DreamFrame
from immersions.dream.listen import ListenEngine, seconds_to_next_bar
from immersions.dream.loop import fit_length, start_clip
from immersions.selection import NamedRegion, region_from_params
from immersions.errors import ImmersionsError
from immersions.layout.cache import ModelLayout, model_layout
from immersions.model.checkpoint import load_model
from immersions.model.ear import Ear
from immersions.model.stats import load_stats
from immersions.paths import models_dir
from immersions.performance.protocols import Clock, Engine
from immersions.visual.pacing import FrameRate
from immersions.visual.renderer import Renderer
from immersions.visual.scene import Scene

log = logging.getLogger(__name__)

HISTORY = 240  # objective values kept for the overlay's plot
SHARED_DREAM = ("bpm", "bars")  # dream parameters both decks share: both loops on one bar
# each deck's own values: its dream and selection, and the clip it restarts from
DECK_OWN = tuple(p.name for p in REGISTRY if p.consumer in (DREAM, SELECT) and p.name not in SHARED_DREAM) + (
    "start_clip",)


def scene_from_layout(ml: ModelLayout) -> Scene:
    """The renderer's static map from a graph and its layout: edges strongest first."""
    g = ml.graph
    order = np.argsort(-g.weight, kind="stable")
    return Scene(ml.positions, g.node_tap, tuple(t.name for t in g.taps), g.src[order], g.dst[order],
                 g.weight[order])


def available_models() -> list[str]:
    """Model folders in models/ (each with config.json)."""
    return sorted(p.name for p in models_dir().iterdir() if (p / "config.json").is_file())


@dataclass
class LoadedModel:
    model: Ear
    stats: dict | None
    layout: ModelLayout
    scene: Scene
    name: str

    @property
    def key(self) -> str:
        """What the dream engine writes into DreamFrame.model_name for this model."""
        return str(self.model.folder)


def load_for_performance(name: str | None = None, progress: bool = False) -> LoadedModel:
    """A model with its statistics and its map (the cached layout, computed once if missing)."""
    model = load_model(name)
    stats = load_stats(model)
    if stats is None:
        log.warning("model %s has no activation statistics: neurons glow unnormalized; run `immersions stats`",
                    model.folder)
    started = time.perf_counter()
    ml = model_layout(model, stats, progress=progress)
    if not ml.cached:
        log.info("laid out %d neurons in %.1f s (saved for next time)", ml.graph.nodes, time.perf_counter() - started)
    return LoadedModel(model, stats, ml, scene_from_layout(ml), Path(model.folder).name)


class OfflineClock(DeckControls):
    """The player's sound without a device, advanced frame by frame: `immersions render`
    hears exactly what a listener would have heard at each drawn frame, and keeps it."""

    def __init__(self, sample_rate: int = 48000):
        self.sample_rate = sample_rate
        self.renderer = LoopRenderer(sample_rate)
        self.device_name, self.latency, self.fallback = "offline render", 0.0, False
        self.follows_link = False  # an offline render keeps its own time
        self._audio: list[np.ndarray] = []

    def set_volume(self, volume: float) -> None:
        self.renderer.set_volume(volume)

    def configure(self, settings) -> None:
        self.renderer.configure(settings)

    def advance(self, seconds: float) -> None:
        n = int(round((self.renderer.frames / self.sample_rate + seconds) * self.sample_rate)) - self.renderer.frames
        if n > 0:
            self._audio.append(self.renderer.render(n)[:, 0].copy())

    def position(self, now: float | None = None, deck: int | None = None) -> Playhead:
        if self.renderer.frames == 0:
            return SILENT
        return self.renderer.playhead_at(self.renderer.frames - 1, deck)

    def audio(self) -> np.ndarray:
        return np.concatenate(self._audio) if self._audio else np.zeros(0, np.float32)

    # recording: lossless, because an offline render may run faster than the writer
    def start_recording(self, path=None, folder=None) -> Path:
        return record(self.renderer, path, folder, lossless=True).path

    def stop_recording(self):
        recorder = self.renderer.stop_recording()
        return recorder.stop() if recorder is not None else None

    @property
    def recording(self) -> bool:
        return self.renderer.tap is not None and self.renderer.tap.recording

    def stats(self):
        return None

    def close(self, fade: bool = True) -> None:
        pass


@dataclass
class DeckState:
    """One deck of the performance: its dream engine (its selection, start clip and dream state),
    the model it dreams on and its own parameter values (`DECK_OWN`). The edited deck's live in
    the Performance's own attributes; this record holds them for the other deck."""

    name: str  # "A" or "B"
    engine: Engine
    loaded: LoadedModel
    start_name: str
    params: Snapshot
    held: bool = False  # its engine was paused by the decks' schedule (not by the performer)
    objectives: deque = field(default_factory=lambda: deque(maxlen=HISTORY))  # the HUD's curve for this deck
    plotted: int = -1  # the serial of the newest frame in `objectives`

    @property
    def index(self) -> int:
        return DECK_NAMES.index(self.name)


class Performance:
    """Everything a performance runs, stepped by `frame()`; see the module docstring.

    clock: a LoopPlayer (live sound) or an OfflineClock (headless render); engine: a DreamEngine,
    or what `engine_factory` makes (a RemoteEngine): see protocols.py.
    Changes go through `set(name, value)`: validated against the registry; a bad value is
    rejected with a logged one-line reason and the last good state is kept."""

    def __init__(self, ctx, size: tuple[int, int], clock: Clock, model: str | None = None,
                 device: str | torch.device | None = None, start: str = "groove", seed: int = 0,
                 params: Snapshot | None = None, progress: bool = False, engine_factory=None, sound_in=None):
        self.ctx, self.size, self.clock = ctx, size, clock
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.params = params or REGISTRY.defaults()
        if start in REGISTRY["start_clip"].choices:
            self.params = self.params.replace(start_clip=start)
        wanted_deck, self.params = self.params["deck"], self.params.replace(deck=DECK_NAMES[0])  # A first
        self.seed = seed
        # several networks stay loaded, each with its own map, statistics and renderer; the
        # one dreamed on is `loaded`, the one drawn is the one whose clip is heard
        self.models: dict[str, LoadedModel] = {}
        self.renderers: dict[str, Renderer] = {}
        self.loaded = self._load(model, progress)
        self.renderer = self.renderers[self.loaded.key]
        self.start_name = start
        rate = self.loaded.model.sample_rate
        samples = loop_length(self.params, rate)
        # the dream thread hands each new clip to the player itself, so the resampling in
        # offer() never costs the render loop a frame
        # engine_factory: another engine with DreamEngine's interface (remote dreaming)
        make = engine_factory or DreamEngine
        self.engine: Engine = make(self.loaded.model, self.loaded.stats,
                           start_clip(start, samples, rate, seed),
                           self.params, device=self.device, seed=seed, on_frame=self._offer)
        self.engine.select(self._region(self.params), keep=False)
        self.clock.configure(self.params)
        self.edited = self.params["deck"]
        self.decks: dict[str, DeckState] = {self.edited: DeckState(self.edited, self.engine, self.loaded,
                                                                   self.start_name, self.params)}
        self._started = False
        self._shown_decks = None  # what the map shows of two decks (clips and fader gains; see _show_decks)
        # every control source (overlay, keys, MIDI, OSC, presets, autopilot) goes through here
        self.controls = ControlHub(self)
        self.controls.handle("select", lambda arg, source: self.engine.select(
            self._region(self.params), keep=self.params["keep"]))
        self.controls.handle("restart", lambda arg, source: self.set_start(self.params["start_clip"]))
        self.controls.handle("pause", lambda arg, source: self.toggle_dreaming())
        self.controls.handle("model", lambda arg, source: self.switch_model(self._model_name(arg)))
        self.controls.handle("model_next", lambda arg, source: self.switch_model(self._model_name(+1, relative=True)))
        self.controls.handle("model_previous", lambda arg, source: self.switch_model(self._model_name(-1, relative=True)))
        self.controls.handle("capture", lambda arg, source: self.capture())
        self.controls.handle("regions", lambda arg, source: self.set_regions(arg))
        self.controls.handle("fade_bars", lambda arg, source: self.fade(arg, source))
        self.controls.handle("deck", lambda arg, source: self.controls.set(
            "deck", arg if arg is not None else DECK_NAMES[1 - DECK_NAMES.index(self.params["deck"])], source))
        # the room's sound (perform --input): listen mode and capture, on their own thread
        self.sound_in = sound_in
        self.listening = None if sound_in is None else ListenEngine(
            sound_in, lambda: (self.loaded.model, self.loaded.stats), lambda: self.params)
        self._listened = -1
        self.listen_shown = None  # the ListenFrame drawn in the last frame (None: the heard dreamed clip)
        self.last_capture: np.ndarray | None = None  # the newest captured clip, fitted to the loop
        self.rejected = 0
        self.last_error: str | None = None
        self.resting = False  # the opening hours are closed: no deck dreams (see rest())
        self._rested: list[DeckState] = []
        self._shown = -1
        self.frame_rate = FrameRate()  # the frames drawn a second of wall time (the HUD's fps)
        self.frames = 0
        self.heard: Playhead = SILENT
        if wanted_deck != self.edited:  # a snapshot that edits deck B: deck B is made, as a control would
            self.set("deck", wanted_deck)

    def _offer(self, frame: DreamFrame, deck: int = 0) -> None:
        """(dream thread) A clip the player cannot take is skipped with a reason; dreaming goes on."""
        try:
            self.clock.offer(frame, deck)
        except ImmersionsError as err:
            log.warning("skipped dreamed clip %d: %s", frame.serial, err)

    # -- control ------------------------------------------------------------------------------

    @property
    def model(self) -> Ear:
        return self.loaded.model

    def set(self, name: str, value) -> bool:
        """Change one parameter; False (logged, nothing changed) when the value is bad."""
        try:
            params = self.params.replace(**{name: value})
        except ImmersionsError as err:
            self.rejected += 1
            self.last_error = str(err)
            log.warning("rejected: %s", err)
            return False
        if params[name] == self.params[name]:
            return True
        before, self.params = self.params, params
        # the registry says who consumes each parameter; the renderer, the window, the listen
        # thread and the actions read theirs from self.params when they next need them
        consumer = REGISTRY[name].consumer
        try:
            if consumer == DECKS:
                self._decks_changed(name)
            elif name == "crossfader" and len(self.decks) == 1:
                self.deck("B")  # the fader reaches for deck B: it is made now
        except ImmersionsError as err:  # deck B cannot be made: the last good state stays
            self.params = before
            self.rejected += 1
            self.last_error = str(err)
            log.warning("rejected: %s", err)
            return False
        if name in SHARED_DREAM:
            for deck in self.decks.values():  # both loops stay on one bar
                if deck.name != self.edited:
                    deck.params = deck.params.replace(**{name: params[name]})
                    deck.engine.submit(deck.params)
        if consumer == PLAYER:
            self.clock.configure(params)
        elif consumer == SELECT:
            if name == "keep":
                # on: the region stands and the next edit starts a new one; off: only the edited one stays
                self.engine.select(self._region(params), keep=params["keep"])
            else:
                self.engine.edit(self._region(params))
        if consumer in ENGINE_CONSUMERS:
            self.engine.submit(params)
        return True

    # -- the decks -------------------------------------------------------------------------------

    def deck(self, name: str) -> DeckState:
        """Deck `name` ("A" or "B"), made now if it is not there yet: the edited deck's model,
        settings and selection, dreaming from its start clip (its engine starts with the show)."""
        if name in self.decks:
            self._store_edited()
            return self.decks[name]
        if name not in DECK_NAMES:
            raise ImmersionsError(f"no deck '{name}': the decks are {', '.join(DECK_NAMES)}")
        self._store_edited()
        params, loaded = self.params.replace(deck=name), self.loaded
        rate, index = loaded.model.cfg.scalogram.sample_rate, DECK_NAMES.index(name)
        clip = start_clip(params["start_clip"], loop_length(params, rate), rate, self.seed + index)
        # a deck of its own here, or a deck on the same link to the dream server
        engine = self.engine.another_deck(loaded.model, loaded.stats, clip, params, self.seed + index,
                                          lambda frame: self._offer(frame, index), name)
        for i, region in enumerate(self.engine.selection.regions[:-1]):  # the kept regions come along
            engine.select(region, keep=i > 0)
        engine.select(self._region(params), keep=len(self.engine.selection.regions) > 1)
        deck = DeckState(name, engine, loaded, params["start_clip"], params)
        self.decks[name] = deck
        if self._started:
            engine.start()
        log.info("deck %s: dreaming on %s from %s", name, loaded.name, params["start_clip"])
        return deck

    def _store_edited(self) -> None:
        """The edited deck's live attributes back into its record."""
        deck = self.decks[self.edited]
        deck.engine, deck.loaded, deck.start_name, deck.params = self.engine, self.loaded, self.start_name, self.params

    def _decks_changed(self, name: str) -> None:
        """(set) `deck`: the controls now edit the other deck: its own values come into `params`
        (the controls' feedback follows them); `dream_decks` is read by the schedule each frame."""
        if name != "deck" or self.params["deck"] == self.edited:
            return
        wanted = self.params["deck"]
        shared = self.params
        self.params = self.params.replace(deck=self.edited)
        deck = self.deck(wanted)
        own = {n: deck.params[n] for n in DECK_OWN}
        self.params = shared.replace(**own)
        self.engine, self.loaded, self.start_name = deck.engine, deck.loaded, deck.start_name
        self.edited = wanted
        for n in DECK_OWN:
            if own[n] != shared[n]:
                self.controls.announce(n, own[n], DECK_SWITCH)  # motor faders and OSC follow the deck being edited

    def fade(self, bars=None, source: str = "") -> bool:
        """`fade_bars`: move the crossfader to the deck off air over `bars` bars (default
        `fade_length`), from the next bar line to a bar line; deck B is made if it is not there."""
        bars = self.params["fade_length"] if bars is None else REGISTRY["fade_length"].validate(bars)
        if len(self.decks) == 1:
            self.deck("B")
        target = 1.0 if self.clock.fader_target < 0.5 else 0.0
        self.clock.fade_to(target, int(bars), bar_seconds(self.params["bpm"]))
        self.controls.set("crossfader", target, FADE)  # where it is going (every control shows it); the fade runs on
        log.info("fading to deck %s over %d bars", DECK_NAMES[int(target)], bars)
        return True

    @property
    def on_air(self) -> str:
        """The deck the crossfader is nearer to now ("A" or "B")."""
        return DECK_NAMES[0 if self.clock.fader < 0.5 else 1]

    def _show_decks(self) -> None:
        """(frame) Two decks on the map of the network heard on air: the glow is both decks'
        activations weighted by the crossfader's gains (while both are heard), each deck's
        selection gets its own halo (deck B's also while it is only in the cue). A new upload
        only when a clip or the fader's gains change."""
        frames = [self.clock.position(deck=i).frame for i in range(len(DECK_NAMES))]
        x = self.clock.fader
        on = frames[0 if x < 0.5 else 1] or frames[1 if x < 0.5 else 0]
        if on is None:
            return
        renderer = self.renderers.get(on.model_name)
        if renderer is None or len(on.activations) != renderer.scene.nodes:
            return
        shown = [f if f is not None and f.model_name == on.model_name else None for f in frames]
        gains = fader_gains(x, self.params["crossfader_curve"])
        blend = all(f is not None for f in shown) and min(gains) > 0.0
        key = (tuple(-1 if f is None else f.serial for f in shown), tuple(round(g, 2) for g in gains) if blend else on.serial)
        if key == self._shown_decks and renderer is self.renderer:
            return
        acts = on.activations
        if blend:
            acts = gains[0] * shown[0].activations.astype(np.float32) + gains[1] * shown[1].activations
        a, b = shown
        renderer.set_clip(acts, a.selection if a else None, a.quieted if a else None,
                          b.selection if b else None, b.quieted if b else None)
        self.renderer, self._shown_decks, self._shown = renderer, key, -1

    @property
    def objectives(self) -> deque:
        """The edited deck's objective, one value per new dream frame (the HUD's curve)."""
        return self.decks[self.edited].objectives

    def deck_lines(self) -> list[str]:
        """The HUD's lines for the decks (none while there is one): for each, whether it is on
        air, whether it dreams or holds, its steps and objective, and which deck is edited."""
        if len(self.decks) < 2:
            return []
        self._store_edited()
        lines = []
        for deck in self.decks.values():
            latest = deck.engine.latest()
            state = "holds" if deck.engine.paused else "dreams"
            figures = f"step {latest.step}, objective {latest.objective:.3f}" if latest is not None else "no clip yet"
            tags = ("on air" if deck.name == self.on_air else "cue") + (", edited" if deck.name == self.edited else "")
            lines.append(f"deck {deck.name} ({tags}): {state}, {figures}, {deck.loaded.name}")
        return lines

    def _schedule_dreaming(self) -> None:
        """(per frame) With two decks and `dream_decks` off_air: a deck that can be heard (the
        fader, or where it is going, not fully on the other side) holds its loop; the one nobody
        hears dreams. A deck the performer paused stays paused."""
        if len(self.decks) < 2 or self.resting:
            return
        self._store_edited()
        now, target = self.clock.fader, self.clock.fader_target
        both = self.params["dream_decks"] == "both"
        for deck in self.decks.values():
            silent = (min(now, target) >= 1.0) if deck.index == 0 else (max(now, target) <= 0.0)
            hold = not both and not silent
            if hold and not deck.engine.paused:
                deck.engine.pause()
                deck.held = True
            elif not hold and deck.held:
                deck.held = False
                if deck.engine.paused:
                    deck.engine.resume()

    def kept_regions(self) -> tuple[NamedRegion, ...]:
        """The regions frozen before the one the faders edit, by tap name (what a preset keeps)."""
        taps = self.model.taps
        return tuple(NamedRegion.of(r, taps) for r in self.engine.selection.regions[:-1] if r.tap < len(taps))

    def set_regions(self, regions) -> int:
        """A preset's frozen regions become the selection, the faders' region edited after them;
        a region whose tap this model lacks is skipped with its reason. Returns how many took."""
        if not isinstance(regions, (list, tuple)) or not all(isinstance(r, NamedRegion) for r in regions):
            raise ImmersionsError("regions: only a preset's [[region]] tables set the frozen regions")
        taps, kept = self.model.taps, []
        for named in regions:
            try:
                kept.append(named.on(taps))
            except ImmersionsError as err:
                self.rejected += 1
                self.last_error = f"preset region on '{named.layer}' skipped: {err}"
                log.warning("%s", self.last_error)
        for i, region in enumerate(kept):
            self.engine.select(region, keep=i > 0)
        self.engine.select(self._region(self.params), keep=bool(kept))
        return len(kept)

    def _region(self, params: Snapshot, model: Ear | None = None):
        return region_from_params(len((model or self.model).taps), params)

    def set_start(self, name: str) -> bool:
        rate = self.model.sample_rate
        try:
            clip = start_clip(name, loop_length(self.params, rate), rate, self.seed)
        except ImmersionsError as err:
            self.rejected += 1
            self.last_error = str(err)
            log.warning("rejected start clip: %s", err)
            return False
        self.engine.set_start(clip)
        self.start_name = name
        return True

    def capture(self) -> bool:
        """Ask for the last `capture_bars` bars of the room's sound, ending at the next bar line of
        the heard loop; they reach the dream engine as `capture_to` says. False when there is no
        sound in."""
        if self.listening is None:
            self.rejected += 1
            self.last_error = "capture: no sound in; start with --input DEVICE (see `immersions devices`)"
            log.warning("rejected: %s", self.last_error)
            return False
        heard = self.clock.position()
        now = time.perf_counter()
        end = now + seconds_to_next_bar(heard.fraction, heard.loop_seconds, self.params["bars"])
        seconds = self.params["capture_bars"] * bar_seconds(self.params["bpm"])
        try:
            self.listening.capture(end, seconds, self._captured)
        except ImmersionsError as err:
            self.rejected += 1
            self.last_error = str(err)
            log.warning("rejected: %s", err)
            return False
        log.info("capturing %d bars of input, ending in %.2f s on the bar", self.params["capture_bars"], end - now)
        return True

    def _captured(self, clip: np.ndarray) -> None:
        """(listen thread) A captured clip, fitted to the loop, goes where `capture_to` says."""
        params = self.params
        clip = fit_length(clip, loop_length(params, self.model.sample_rate))
        self.last_capture = clip
        if params["capture_to"] == "mix":
            try:
                self.engine.set_blend(clip)
            except ImmersionsError as err:
                log.warning("capture: %s", err)
        else:
            self.engine.set_start(clip)
            self.start_name = "captured"

    def _load(self, name: str | None, progress: bool = False) -> LoadedModel:
        """A model with its map and renderer, loaded once and kept (switching back is instant)."""
        for loaded in self.models.values():
            if name is not None and name in (loaded.name, loaded.key):
                return loaded
        loaded = load_for_performance(name, progress=progress)
        if loaded.key not in self.models:
            self.models[loaded.key] = loaded
            self.renderers[loaded.key] = Renderer(self.ctx, loaded.scene, self.size)
        return self.models[loaded.key]

    def preload(self, names) -> None:
        """Load more models up front (`perform --model A --model B`), so a switch costs nothing."""
        for name in names:
            self._load(name)

    def _model_name(self, which, relative: bool = False) -> str:
        """A model named, numbered (0-based, in load order) or stepped through from the current one."""
        loaded = list(self.models.values())
        if relative:
            index = [m.key for m in loaded].index(self.loaded.key)
            return loaded[(index + int(which)) % len(loaded)].key
        if isinstance(which, (int, float)) and not isinstance(which, bool):
            if not 0 <= int(which) < len(loaded):
                raise ImmersionsError(f"no model {int(which)}: {len(loaded)} loaded (0 .. {len(loaded) - 1})")
            return loaded[int(which)].key
        return str(which)

    def switch_model(self, name: str) -> bool:
        """Dream on another model from now on. The sound carries on: its next clip takes over at
        a loop boundary, and the picture switches to its map with it (see `frame()`)."""
        try:
            loaded = self._load(name)
        except ImmersionsError as err:
            self.rejected += 1
            self.last_error = str(err)
            log.warning("rejected model: %s", err)
            return False
        if loaded.key == self.loaded.key:
            return True
        if loaded.model.sample_rate != self.model.sample_rate:
            log.info("model %s runs at another sample rate; the loop is resampled", loaded.name)
        self.engine.switch_model(loaded.model, loaded.stats)
        self.engine.select(self._region(self.params, loaded.model), keep=False)
        self.loaded = loaded
        log.info("dreaming on %s from the next step", loaded.name)
        return True

    def rest(self, resting: bool) -> None:
        """Opening hours: closed, every deck's dreaming rests (the loops stay, no CPU); open again,
        the decks that were dreaming go on and the decks' schedule takes over again. A deck the
        performer paused stays paused."""
        if resting == self.resting:
            return
        self.resting = resting
        if resting:
            self._rested = [deck for deck in self.decks.values() if not deck.engine.paused]
            for deck in self._rested:
                deck.engine.pause()
        else:
            for deck in self._rested:
                deck.engine.resume()
            self._rested = []

    def toggle_dreaming(self) -> bool:
        """Pause or resume dreaming (the current loop keeps playing); True when dreaming."""
        self.decks[self.edited].held = False  # the performer's pause, not the schedule's
        if self.engine.paused:
            self.engine.resume()
        else:
            self.engine.pause()
        return not self.engine.paused

    def resize(self, width: int, height: int) -> None:
        self.size = (width, height)
        for renderer in self.renderers.values():
            renderer.resize(width, height)

    # -- per frame ------------------------------------------------------------------------------

    def start(self) -> None:
        self._started = True
        for deck in self.decks.values():
            if deck.engine is not self.engine:
                deck.engine.start()
        self.engine.start()
        if self.listening is not None:
            self.listening.start()

    def frame(self, dt: float, target=None, began: float | None = None) -> None:
        """Find what is heard now and draw it (new clips reach the player from the dream thread).
        `began`: when a window's pacer let this frame start (time.perf_counter), else now."""
        self.frame_rate.tick(began)
        self.controls.apply()
        self._schedule_dreaming()
        for deck in self.decks.values():  # each deck's objective curve, dreaming or not
            latest: DreamFrame | None = deck.engine.latest()
            if latest is not None and latest.serial != deck.plotted:
                deck.objectives.append(float(latest.objective))
                deck.plotted = latest.serial
        heard = self.clock.position()
        frame = heard.frame
        listened = self._listen_frame()
        if listened is not None:
            # listen mode: the newest response to the room's sound, on the dreaming model's map
            renderer = self.renderers[self.loaded.key]
            if listened.serial != self._listened:
                dreamed = self.engine.latest()
                same = dreamed is not None and dreamed.model_name == self.loaded.key
                renderer.set_clip(listened.activations, dreamed.selection if same else None,
                                  dreamed.quieted if same else None)
                self._listened = listened.serial
                self._shown = -1  # the heard clip's table goes back up when listening ends
            self.renderer = renderer
            self.heard = heard
            self.listen_shown = listened
            self.renderer.render(listened.fraction_at(), dt, self.params, target)
        elif len(self.decks) > 1:
            self._show_decks()
        elif frame is not None and frame.serial != self._shown:
            # the map of the network that made the heard clip: a model switch shows when it is heard
            renderer = self.renderers.get(frame.model_name)
            if renderer is not None and len(frame.activations) == renderer.scene.nodes:
                self.renderer = renderer
                renderer.set_clip(frame.activations, frame.selection, frame.quieted)
            self._shown = frame.serial
        if listened is None:
            self._listened = -1
            self.listen_shown = None
            self.heard = heard
            self.renderer.render(heard.fraction, dt, self.params, target)
        self.frames += 1

    def _listen_frame(self):
        """The ListenFrame to draw now: listen on, and a window of the dreaming model ready."""
        if self.listening is None or not self.params["listen"]:
            return None
        listened = self.listening.latest()
        if listened is None or listened.model_name != self.loaded.key:
            return None
        renderer = self.renderers.get(self.loaded.key)
        if renderer is None or len(listened.activations) != renderer.scene.nodes:
            return None
        return listened

    @property
    def fps(self) -> float:
        """Frames drawn a second of wall time, over the last second (what the HUD shows)."""
        return self.frame_rate.fps

    def shown_frame(self) -> DreamFrame | None:
        """The DreamFrame whose clip is heard (and drawn) now."""
        return self.heard.frame

    def screenshot(self, path: str | Path) -> Path:
        return save_png(self.renderer.read_image(), path)

    def close(self) -> None:
        """Stop dreaming and the sound (faded, no click); release the GPU objects."""
        for deck in self.decks.values():
            if deck.engine is not self.engine:
                deck.engine.stop()
        self.engine.stop()
        if self.listening is not None:
            self.listening.stop()
        if self.sound_in is not None:
            self.sound_in.close()
        self.clock.close(fade=True)
        for renderer in self.renderers.values():
            renderer.release()
        self.renderers.clear()


FRAME_FILE = re.compile(r"frame_\d{5}\.png")  # the frames `render` writes: frame_00000.png, frame_00001.png ...


def remove_frames(folder: str | Path) -> int:
    """Remove the frames an earlier `render` wrote into `folder` (only names like
    frame_00042.png: nothing else there is touched), so that a shorter run does not leave old
    frames beside its own. Returns how many went."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    removed = 0
    for path in folder.iterdir():
        if FRAME_FILE.fullmatch(path.name) and path.is_file():
            path.unlink()
            removed += 1
    return removed


def save_png(image: np.ndarray, path: str | Path) -> Path:
    """An [h, w, 3] uint8 picture (top row first) to a PNG file."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(image)).save(path)
    return path
