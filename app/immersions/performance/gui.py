"""The imgui overlay (toggled with Tab): every live parameter, generated from the registry,
plus choosers (tap, start clip, model) and a HUD (fps, dream steps/s, objective plot, the
heard clip's scalogram, the selection, the audio device and its health).

The overlay only reads the performance and changes it through its control hub; it
holds no state of its own beyond what imgui needs to draw.
"""

from __future__ import annotations

import math
from array import array

import imgui
import moderngl
import numpy as np

from immersions.registry import CHOICE, INTEGER, LOG, OPEN_GROUPS, REGISTRY, TOGGLE, Parameter
from immersions.frames import HUD_BINS, HUD_FRAMES
from immersions.control.hub import GUI
from immersions.selection import AXIS_PARAMETERS, layer_of_tap, missing_axes, region_words, tap_of_layer
from immersions.performance.performance import Performance, available_models

PANEL_WIDTH = 380
HUD_WIDTH = 300  # the HUD's plots and pictures, and where its lines wrap
HELP = ("Tab overlay  F fullscreen  Space pause  1-9 presets  R record  C export clip  M next model  L listen  I capture  "
        "D other deck  X fade  F12 screenshot  Esc quit  right-click a parameter: MIDI learn")


def overlay_groups() -> dict[str, list[Parameter]]:
    """The overlay's sections and their widgets: every registry parameter, by group, in the
    registry's order (but `start_clip`: the start clip chooser sets it and restarts the loop)."""
    return {group: [p for p in parameters if p.name != "start_clip"] for group, parameters in REGISTRY.groups().items()}


def _widget(p: Parameter, value):
    """One registry parameter as an imgui widget; (changed, new value)."""
    label = f"{p.name}##{p.group}"
    if p.scale == TOGGLE:
        return imgui.checkbox(label, bool(value))
    if p.scale == CHOICE:
        changed, index = imgui.combo(label, p.choices.index(value), list(p.choices))
        return changed, p.choices[index]
    if p.scale == INTEGER:
        return imgui.slider_int(label, int(value), int(p.minimum), int(p.maximum))
    fmt = "%.4g" + (f" {p.unit}" if p.unit else "")
    flags = imgui.SLIDER_FLAGS_LOGARITHMIC if p.scale == LOG else 0
    changed, new = imgui.slider_float(label, float(value), float(p.minimum), float(p.maximum), fmt, flags)
    return changed, min(p.maximum, max(p.minimum, new))  # typed-in values are not clamped by imgui


class Overlay:
    """Draws the overlay into the bound framebuffer. `imgui_renderer` is a moderngl-window
    imgui renderer (a window's, or a headless one with ctx= and display_size=)."""

    def __init__(self, ctx: moderngl.Context, imgui_renderer):
        self.ctx = ctx
        self.imgui = imgui_renderer
        self.visible = True
        self.message = ""
        self._scalogram = ctx.texture((HUD_FRAMES, HUD_BINS), 3)
        self._scalogram.filter = (moderngl.LINEAR, moderngl.LINEAR)
        self.imgui.register_texture(self._scalogram)
        self._scalogram_serial = -1
        self._models = available_models()
        self._rgb = np.zeros((HUD_BINS, HUD_FRAMES, 3), np.uint8)
        self._preset_name = ""
        self.video_out = None  # the window's VideoOut, when --video-out is given
        self.link = None  # the window's LinkSession (--link on perform or install): peers, tempo, phase in the HUD

    def draw(self, perf: Performance, dt: float, surface=None) -> None:
        """`surface`: the ControlSurface (MIDI, presets, recording), when there is one."""
        if not self.visible:
            return
        io = imgui.get_io()
        io.delta_time = max(dt, 1e-4)
        imgui.new_frame()
        self._controls(perf, surface)
        self._hud(perf, surface)
        imgui.render()
        self.imgui.render(imgui.get_draw_data())

    # -- the parameter panel -----------------------------------------------------------------

    def _controls(self, perf: Performance, surface=None) -> None:
        height = imgui.get_io().display_size.y
        imgui.set_next_window_position(10, 10, imgui.FIRST_USE_EVER)
        imgui.set_next_window_size(PANEL_WIDTH, max(200, height - 20), imgui.FIRST_USE_EVER)
        imgui.set_next_window_bg_alpha(0.75)
        imgui.begin("Immersions")
        imgui.push_text_wrap_pos(PANEL_WIDTH - 20)
        imgui.text_disabled(HELP)
        imgui.pop_text_wrap_pos()
        self._choosers(perf)
        midi = surface.midi if surface is not None else None
        for group, parameters in overlay_groups().items():
            expanded, _ = imgui.collapsing_header(group, None, imgui.TREE_NODE_DEFAULT_OPEN if group in OPEN_GROUPS else 0)
            if not expanded:
                continue
            previous = None
            lacks = missing_axes(perf.model.taps[self._tap_index(perf)])
            for p in parameters:
                axis = next((a for a, names in AXIS_PARAMETERS.items() if p.name in names), None)
                if axis in lacks:  # no empty slider for an axis the tap does not have: say so
                    if p.name == AXIS_PARAMETERS[axis][0]:
                        imgui.text_disabled(f"    {axis}: this tap has {lacks[axis]}")
                    continue
                if p.scale == TOGGLE and previous is not None and previous.scale == TOGGLE:
                    imgui.same_line()  # switches side by side: keep | quiet
                previous = p
                changed, value = _widget(p, perf.params[p.name])
                if imgui.is_item_hovered() and p.description:
                    imgui.set_tooltip(p.description)
                if midi is not None and imgui.is_item_clicked(1):
                    midi.learn(p.name)
                if midi is not None and midi.learning == p.name:
                    imgui.text_colored("    move a MIDI control to map it", 1.0, 0.8, 0.3)
                if p.name == "layer":
                    imgui.text(f"    tap: {perf.model.taps[self._tap_index(perf)].name}")
                if changed:
                    perf.controls.set(p.name, value, GUI)
            if group == "Sound in":
                self._sound_in(perf)
        if surface is not None:
            self._surface(perf, surface)
        if self.video_out is not None:
            self._video_out()
        error = perf.controls.last_error or perf.last_error
        if error:
            imgui.text_colored(f"rejected: {error}", 1.0, 0.5, 0.4)
        imgui.end()

    def _sound_in(self, perf: Performance) -> None:
        """The capture button and what the room's sound is doing."""
        if perf.sound_in is None:
            imgui.text_disabled("no sound in (perform --input DEVICE)")
            return
        if imgui.button("capture (I)"):
            perf.controls.act("capture", None, GUI)
        listening = perf.listening
        imgui.same_line()
        imgui.text(f"{perf.sound_in.name}" + (f", {listening.pending} waiting for the bar" if listening.pending else ""))
        shown = perf.listen_shown
        if shown is not None:
            imgui.text(f"listening: {1000 * shown.compute_s:.0f} ms a window, every {1000 * shown.period:.0f} ms")

    def _tap_index(self, perf: Performance) -> int:
        return tap_of_layer(perf.params["layer"], len(perf.model.taps))

    def _choosers(self, perf: Performance) -> None:
        controls = perf.controls
        names = [t.name for t in perf.model.taps]
        changed, tap = imgui.combo("tap", self._tap_index(perf), names)
        if changed:
            controls.set("layer", layer_of_tap(tap, len(perf.model.taps)), GUI)
        clips = REGISTRY["start_clip"].choices
        changed, clip = imgui.combo("start clip", clips.index(perf.params["start_clip"]), list(clips))
        if changed:
            controls.set("start_clip", clips[clip], GUI)
            controls.act("restart", None, GUI)
        # the loaded models first (switching to them is instant), then the others in models/
        loaded = [m.name for m in perf.models.values()]
        models = loaded + [m for m in self._models if m not in loaded]
        if len(models) > 1:
            name = perf.loaded.name
            changed, index = imgui.combo("model", models.index(name) if name in models else 0, models)
            if changed and models[index] != name:
                controls.act("model", models[index], GUI)

    def _surface(self, perf: Performance, surface) -> None:
        """Presets (recall, save), recording, clip export, MIDI and OSC status."""
        controls = perf.controls
        presets = surface.presets
        expanded, _ = imgui.collapsing_header("Presets", None, imgui.TREE_NODE_DEFAULT_OPEN)
        if expanded:
            for slot, name in enumerate(presets.library.names(), start=1):
                label = f"{slot}  {name}" if slot <= 9 else f"   {name}"
                if imgui.selectable(label, name == presets.current)[0]:
                    controls.act("preset", name, GUI)
            if presets.morphing:
                imgui.progress_bar(presets.progress, (PANEL_WIDTH - 40, 0), "morphing")
            _, self._preset_name = imgui.input_text("##preset name", self._preset_name, 64)
            imgui.same_line()
            if imgui.button("save preset") and self._preset_name.strip():
                path = presets.save(self._preset_name.strip())
                self.message = f"preset saved: {path}"
        expanded, _ = imgui.collapsing_header("Record and control", None, imgui.TREE_NODE_DEFAULT_OPEN)
        if expanded:
            if imgui.button("stop recording (R)" if surface.recording else "record (R)"):
                controls.act("record", None, GUI)
            imgui.same_line()
            if imgui.button("export clip (C)"):
                path = controls.act("export_clip", None, GUI)
                if path is not None:
                    self.message = f"clip: {path}"
            if surface.recording:
                imgui.text_colored(f"recording {perf.clock.renderer.tap.seconds:6.1f} s", 1.0, 0.3, 0.3)
            elif surface.last_recording is not None:
                imgui.text(f"recorded {surface.last_recording.seconds:.1f} s: {surface.last_recording.path}")
            midi = surface.midi
            if midi is not None:
                imgui.text(f"MIDI: {midi.status} ({midi.midi_map.name})")
                if midi.learning:
                    imgui.same_line()
                    if imgui.button("cancel learn"):
                        midi.cancel_learn()
                if imgui.button("save MIDI map"):
                    self.message = f"MIDI map saved: {midi.save_map(surface.map_path())}"
            if surface.osc is not None:
                host, port = surface.osc.address
                imgui.text(f"OSC: {host}:{port}, {surface.osc.received} messages")

    def _video_out(self) -> None:
        """Sending on or off, with or without the overlay; what was sent and dropped."""
        out = self.video_out
        expanded, _ = imgui.collapsing_header("Video out", None, 0)
        if expanded:
            _, out.enabled = imgui.checkbox(f"send to {out.sender.description}", out.enabled)
            _, out.overlay = imgui.checkbox("send the overlay too", out.overlay)
            error = f", {out.stats.last_error}" if out.stats.last_error else ""
            imgui.text(f"{out.stats.sent} frames sent, {out.stats.dropped} dropped{error}")

    # -- the HUD -----------------------------------------------------------------------------

    def _hud(self, perf: Performance, surface=None) -> None:
        width = imgui.get_io().display_size.x
        imgui.set_next_window_position(width - HUD_WIDTH - 30, 10, imgui.FIRST_USE_EVER)
        imgui.set_next_window_bg_alpha(0.6)
        imgui.begin("HUD", flags=imgui.WINDOW_ALWAYS_AUTO_RESIZE)
        # lines wrap at the plot's width: a long selection line (a tap that lacks axes says so) or a
        # message would grow the window past the screen's right edge
        imgui.push_text_wrap_pos(imgui.get_cursor_pos_x() + HUD_WIDTH)
        frame = perf.engine.latest()
        heard = perf.shown_frame()
        steps = frame.steps_per_second if frame is not None else 0.0
        imgui.text(f"{perf.fps:5.1f} fps   dreaming {steps:5.1f} steps/s" + ("   PAUSED" if perf.engine.paused else ""))
        link = perf.engine.status  # remote dreaming: the link to the server (None when dreaming here)
        if link:
            imgui.text_colored(f"server: {link}", *((0.5, 1.0, 0.6) if perf.engine.connected else (1.0, 0.5, 0.4)))
        stats = perf.renderer.stats
        imgui.text(f"{stats.nodes_drawn} neurons, {stats.edges_drawn} connections drawn")
        if perf.objectives:
            values = array("f", perf.objectives)
            imgui.plot_lines("##objective", values, graph_size=(HUD_WIDTH, 50),
                             overlay_text=f"objective {values[-1]:.3f}")
        if heard is not None:
            if heard.serial != self._scalogram_serial:
                self._rgb[:] = _inferno(heard.scalogram[::-1])  # high bins on top
                self._scalogram.write(self._rgb.tobytes())
                self._scalogram_serial = heard.serial
            imgui.image(self._scalogram.glo, HUD_WIDTH, 100)
            imgui.text(f"heard: loop {heard.serial}, step {heard.step}, {perf.heard.fraction * 100:3.0f} %")
        decks = perf.deck_lines()  # two decks: which is on air, which dreams, its curve, and the fader
        for line, deck in zip(decks, perf.decks.values()):
            imgui.text(line)
            if deck.name != perf.edited and deck.objectives:  # the edited deck's curve is the one above
                values = array("f", deck.objectives)
                imgui.plot_lines(f"##objective {deck.name}", values, graph_size=(300, 30),
                                 overlay_text=f"deck {deck.name} objective {values[-1]:.3f}")
        if decks:
            imgui.progress_bar(perf.clock.fader, (HUD_WIDTH, 0), f"A  crossfader {perf.clock.fader:.2f}  B")
        imgui.text(f"selection: {region_words(perf.model.taps[self._tap_index(perf)], perf.params)}")
        clock = perf.clock
        audio = f"audio: {clock.device_name}, {1000 * clock.latency:.0f} ms"
        player_stats = clock.stats()
        if player_stats is not None:
            audio += f", late {player_stats.late_callbacks}, underruns {player_stats.underruns}"
            if player_stats.reopens:
                audio += f", reopened {player_stats.reopens}"
        imgui.text(audio)
        cue = getattr(clock, "cue", None)  # the headphones' output (--cue-device)
        if cue is not None:
            imgui.text(cue.line())
        tempo = self.link or getattr(surface, "link", None)  # Ableton Link: peers, tempo, where in the bars
        if tempo is not None:
            self._link_status(tempo.status)
        if self.message:
            imgui.text(self.message)
        imgui.pop_text_wrap_pos()
        imgui.end()

    def _link_status(self, status) -> None:
        """The Link line, and the loop-long bar group as a bar that fills up to the next loop start."""
        imgui.text(status.line())
        if status.enabled:
            imgui.progress_bar(status.fraction, (HUD_WIDTH, 0), f"{status.phase:4.1f} of {status.quantum:g} beats")

    def release(self) -> None:
        self.imgui.remove_texture(self._scalogram)
        self._scalogram.release()


def _inferno(gray: np.ndarray) -> np.ndarray:
    """A cheap perceptual colour map for the HUD scalogram (black -> purple -> orange -> yellow)."""
    x = gray.astype(np.float32)[..., None] / 255.0
    r = np.clip(1.6 * x, 0, 1)
    g = np.clip(1.6 * x - 0.6, 0, 1)
    b = np.clip(np.sin(math.pi * x) * 0.8 + 0.1 * x, 0, 1)
    return (np.concatenate([r, g, b], axis=-1) * 255).astype(np.uint8)
