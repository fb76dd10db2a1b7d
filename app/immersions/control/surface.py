"""The control surface around one performance: MIDI (live and automation replay), OSC,
presets and scenes, recording and clip export, wired to the performance's control hub.

The window and the headless runner build one `ControlSurface` and call `tick(dt, now)`
once per frame on the main thread; everything else (the OSC server's thread, mido's
callbacks) only queues requests in the hub, which the performance applies at the start of
its next frame. `close()` stops recording (the file is finished) and the OSC server.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from immersions.devices.recorder import export_clip
from immersions.control.automation import Automation
from immersions.control.hub import AUTOMATION, ControlHub
from immersions.control.midi import (MidiController, MidiMap, MidiPorts, default_input, map_for_port, map_label,
                                     match_port)
from immersions.control.osc import OscServer
from immersions.control.presets import PresetLibrary, PresetPlayer
from immersions.errors import ImmersionsError
from immersions.paths import config_dir
from immersions.registry import loop_seconds

log = logging.getLogger(__name__)

@dataclass
class SurfaceOptions:
    midi: bool = True  # look for a controller (none at all is fine)
    midi_port: str | None = None  # port name or part of it (default: the one a shipped map is for)
    midi_map: str | None = None  # map file or shipped map name (default: the automation's, else by port, else generic8)
    midi_backend: str | None = None
    soft_takeover: bool = True
    osc_port: int | None = None  # None: no OSC server
    osc_host: str = "127.0.0.1"
    automation: str | None = None  # a MIDI file replayed through the map
    preset: str | None = None  # recalled at the start (name or slot)
    recordings: str = "recordings"  # folder for recordings and exported clips
    link: bool = False  # join the Ableton Link session: bpm follows it, the loop starts on its bar

    def check(self) -> None:
        """Read the files named here now, so a bad one fails in one line before anything starts."""
        if self.midi_map:
            MidiMap.named(self.midi_map)
        if self.automation:
            Automation.load(self.automation)
        if self.preset:
            PresetLibrary().get(int(self.preset) if self.preset.isdigit() else self.preset)
        if self.osc_port is not None and not 0 <= self.osc_port <= 65535:
            raise ImmersionsError(f"--osc {self.osc_port}: a UDP port is 0 .. 65535")


def _input_for(ports: MidiPorts | None, port: str | None) -> str | None:
    """The input the controller will use: the one `port` names, else `default_input`."""
    try:
        names = ports.inputs() if ports is not None else []
    except Exception:  # a MIDI backend that cannot even start: no device to match
        names = []
    return match_port(port, names) if port else default_input(names)


def replay_map(options: "SurfaceOptions", automation: Automation | None, ports: MidiPorts | None) -> tuple[MidiMap, str]:
    """The map MIDI and automation go through, and why: --map, else the map the take names,
    else the one made for the controller's port, else generic8."""
    if options.midi_map:
        return MidiMap.named(options.midi_map), "--map"
    if automation is not None and automation.map_name:
        try:
            return MidiMap.named(automation.map_name), "named in the take"
        except ImmersionsError as err:
            log.warning("the take names MIDI map '%s', which does not load (%s); using the default map",
                        automation.map_name, err)
    name = _input_for(ports, options.midi_port)
    chosen = map_for_port(name)
    made_for = name is not None and bool(chosen.port) and match_port(chosen.port, [name]) is not None
    return chosen, f"made for '{name}'" if made_for else "the default"


class ControlSurface:
    def __init__(self, perf, options: SurfaceOptions | None = None, ports: MidiPorts | None = None):
        """`ports`: how MIDI ports are listed and opened (default: mido's backend)."""
        self.perf = perf
        self.options = options = options or SurfaceOptions()
        hub: ControlHub = perf.controls
        self.hub = hub
        # load everything that can fail on a bad file first: nothing is running yet
        midi_map = MidiMap.named(options.midi_map) if options.midi_map else None
        self.automation = Automation.load(options.automation) if options.automation else None
        self.presets = PresetPlayer(hub, PresetLibrary(), lambda: loop_seconds(hub.params), kept=perf.kept_regions)
        self.midi: MidiController | None = None
        if options.midi or self.automation is not None:
            if options.midi and ports is None:
                try:
                    ports = MidiPorts.from_mido(options.midi_backend)
                except Exception as err:  # no usable backend: automation still replays through the map
                    log.info("no MIDI backend (%s); running without a controller", err)
            midi_map, why = replay_map(options, self.automation, ports)
            if self.automation is not None:
                log.info("automation %s: %d messages over %.1f s, through MIDI map '%s' (%s)", self.automation.path,
                         len(self.automation), self.automation.duration, map_label(midi_map), why)
            self.midi = MidiController(hub, midi_map, options.midi_port, soft_takeover=options.soft_takeover,
                                       backend=ports if ports is not None else _NO_PORTS)
            if options.midi_map and Path(options.midi_map).exists():
                self.midi.watch(options.midi_map)  # edit the map file during a show: it reloads
        self.osc: OscServer | None = None
        if options.osc_port is not None:
            self.osc = OscServer(hub, options.osc_port, options.osc_host)
            self.osc.start()
        self.recordings = Path(options.recordings)
        self.last_recording = None
        self.last_export: Path | None = None
        self.automated = 0
        hub.handle("record", lambda arg, source: self.toggle_recording())
        hub.handle("record_start", lambda arg, source: self.start_recording())
        hub.handle("record_stop", lambda arg, source: self.stop_recording())
        hub.handle("export_clip", lambda arg, source: self.export_clip())
        self.link = None
        if options.link:
            from immersions.control.link import LinkSession

            player = perf.clock if perf.clock.follows_link else None  # an offline render keeps its own time
            self.link = LinkSession(hub, player).start()
        if options.preset:
            self.presets.recall(int(options.preset) if options.preset.isdigit() else options.preset)

    # -- per frame (main thread) -------------------------------------------------------------------

    def tick(self, dt: float, now: float, heard: float | None = None) -> None:
        """`now`: seconds since the performance started; `heard`: seconds of sound heard since
        the first dreamed clip (None before it), the time line automation replays on."""
        if self.automation is not None and self.midi is not None and heard is not None:
            for msg in self.automation.due(heard):
                self.midi.handle(msg, source=AUTOMATION)
                self.automated += 1
        if self.midi is not None:
            self.midi.poll(now)
        self.presets.tick(dt)

    # -- recording ---------------------------------------------------------------------------------

    @property
    def recording(self) -> bool:
        return bool(self.perf.clock.recording)

    def start_recording(self) -> Path:
        path = self.perf.clock.start_recording(folder=self.recordings)
        log.info("recording to %s", path)
        return path

    def stop_recording(self):
        info = self.perf.clock.stop_recording()
        if info is not None:
            self.last_recording = info
        return info

    def toggle_recording(self):
        return self.stop_recording() if self.recording else self.start_recording()

    def export_clip(self) -> Path:
        frame = self.perf.shown_frame() or self.perf.engine.latest()
        if frame is None:
            raise ImmersionsError("no dreamed clip yet: nothing to export")
        self.last_export = export_clip(frame, folder=self.recordings)
        log.info("exported the heard clip to %s", self.last_export)
        return self.last_export

    def map_path(self) -> Path:
        """Where the overlay saves the (learned) MIDI map: the --map file, else the user folder."""
        if self.options.midi_map and Path(self.options.midi_map).suffix == ".toml":
            return Path(self.options.midi_map)
        return user_maps_dir() / f"{self.midi.midi_map.path.stem if self.midi.midi_map.path else 'learned'}.toml"

    # -- state -------------------------------------------------------------------------------------

    def state(self) -> dict:
        """What the controls did: for `perform --state-out` and the overlay."""
        midi = self.midi
        return {
            "preset": self.presets.current,
            "midi": None if midi is None else {"status": midi.status, "connected": midi.connected,
                                               "map": midi.midi_map.name},
            "automation": None if self.automation is None else {
                "file": str(self.automation.path), "messages": len(self.automation.messages),
                "map": None if midi is None else map_label(midi.midi_map),
                "replayed": self.automated, "done": self.automation.done},
            "osc": None if self.osc is None else {"address": list(self.osc.address), "received": self.osc.received,
                                                  "rejected": self.osc.rejected},
            "recording": self.recording,
            "last_recording": None if self.last_recording is None else str(self.last_recording.path),
            "last_export": None if self.last_export is None else str(self.last_export),
        }

    def close(self) -> None:
        if self.link is not None:
            self.link.close()
        if self.recording:
            self.stop_recording()
        if self.osc is not None:
            self.osc.stop()
        if self.midi is not None:
            self.midi.close()


def user_maps_dir() -> Path:
    """$XDG_CONFIG_HOME/immersions/controllers (or ~/.config/...): maps saved from the overlay."""
    return config_dir() / "controllers"


def _no_inputs() -> list[str]:
    return []


def _refuse(name: str):
    raise ImmersionsError(f"no MIDI port {name}: no MIDI backend")


_NO_PORTS = MidiPorts(inputs=_no_inputs, outputs=_no_inputs, open_input=_refuse, open_output=_refuse)
