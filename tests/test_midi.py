"""MIDI control: real mido messages through in-memory ports into a real ControlHub.

`Device` plays a controller on a wire: what it sends waits in its outbox, what the
program sends it lands in `shown`. `Studio` is the machine's port list, so a test can
unplug a device and plug it back in.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
from collections import deque

import mido
import pytest

from immersions.control.automation import Automation, write_automation
from immersions.control.hub import ACTIONS, AUTOMATION, GUI, MIDI, ControlHub, Values
from immersions.control.midi import (
    CONTINUOUS, MidiController, MidiMap, MidiPorts, monitor, record,
)
from immersions.registry import CHOICE, LOG, REGISTRY, TOGGLE
from immersions.errors import ImmersionsError


# -- a controller on a wire, and the machine's ports -----------------------------------------

class Device:
    def __init__(self, name: str):
        self.name = name
        self.outbox: deque[mido.Message] = deque()
        self.shown: list[mido.Message] = []
        self.plugged = True  # listed by the machine; unplugged ports go silent, like ALSA's
        self.broken = False  # the port raises on use

    def cc(self, control: int, value: int, channel: int = 1) -> None:
        self.outbox.append(mido.Message("control_change", channel=channel - 1, control=control, value=value))

    def shown_cc(self) -> list[tuple[int, int]]:
        return [(m.control, m.value) for m in self.shown if m.type == "control_change"]


class DeviceInput(mido.ports.BaseInput):
    def __init__(self, device: Device):
        self.device = device
        super().__init__(device.name)

    def _receive(self, block=True):
        if self.device.broken:
            raise OSError(f"{self.device.name}: device error")
        while self.device.plugged and self.device.outbox:
            self._messages.append(self.device.outbox.popleft())


class DeviceOutput(mido.ports.BaseOutput):
    def __init__(self, device: Device):
        self.device = device
        super().__init__(device.name)

    def _send(self, msg):
        if self.device.broken:
            raise OSError(f"{self.device.name}: device error")
        if self.device.plugged:
            self.device.shown.append(msg)


class Studio:
    def __init__(self, *devices: Device):
        self.devices = list(devices)

    def _named(self, name: str) -> Device:
        return next(d for d in self.devices if d.plugged and d.name == name)

    def ports(self) -> MidiPorts:
        names = lambda: [d.name for d in self.devices if d.plugged]
        return MidiPorts(inputs=names, outputs=names, open_input=lambda n: DeviceInput(self._named(n)),
                         open_output=lambda n: DeviceOutput(self._named(n)))


Live = Values  # a real hub target: a Snapshot validated by the registry


def make_hub():
    hub = ControlHub(Live())
    fired: list[tuple] = []
    for action in ACTIONS:
        hub.handle(action, lambda arg, source, action=action: fired.append((action, arg, source)))
    changes: list = []
    hub.listen(changes.append)
    return hub, fired, changes


def rig(map_name="bcf2000", device_name=None, **options):
    midi_map = MidiMap.named(map_name)
    device = Device(device_name or f"{midi_map.port} MIDI 1")
    hub, fired, changes = make_hub()
    ctl = MidiController(hub, midi_map, backend=Studio(device).ports(), **options)
    return ctl, device, hub, fired, changes


def step(ctl, hub, now=0.0):
    ctl.poll(now)
    hub.apply()


# -- maps -------------------------------------------------------------------------------------

@pytest.mark.parametrize("map_name", ["bcf2000", "generic8"])
def test_every_control_of_a_shipped_map_moves_its_parameter_over_the_full_range(map_name):
    ctl, dev, hub, fired, _ = rig(map_name, soft_takeover=False)
    assert ctl.connected
    midi_map = ctl.midi_map
    for b in midi_map.controls:
        ch = b.channel or midi_map.channel
        before = dict(hub.params.values())
        if b.kind in CONTINUOUS:
            p = REGISTRY[b.parameter]
            dev.cc(b.cc, 127, ch)
            step(ctl, hub)
            top = hub.params[b.parameter]
            dev.cc(b.cc, 0, ch)
            step(ctl, hub)
            bottom = hub.params[b.parameter]
            if p.scale == CHOICE:
                assert (bottom, top) == (p.choices[0], p.choices[-1])
                reached = set()
                for v in range(128):
                    dev.cc(b.cc, v, ch)
                    step(ctl, hub)
                    reached.add(hub.params[b.parameter])
                assert reached == set(p.choices)
            elif p.scale == TOGGLE:
                assert (bottom, top) == (False, True)
            else:
                assert bottom == pytest.approx(p.minimum) and top == pytest.approx(p.maximum)
                dev.cc(b.cc, 64, ch)
                step(ctl, hub)
                mid = hub.params[b.parameter]
                u = 64 / 127
                expected = p.minimum * (p.maximum / p.minimum) ** u if p.scale == LOG else p.minimum + u * (p.maximum - p.minimum)
                assert mid == pytest.approx(expected)
        elif b.kind == "switch":
            if b.momentary:
                start = hub.params[b.parameter]
                dev.cc(b.cc, 127, ch)
                dev.cc(b.cc, 0, ch)
                step(ctl, hub)
                assert hub.params[b.parameter] is (not start)
                dev.cc(b.cc, 127, ch)
                step(ctl, hub)
                assert hub.params[b.parameter] is start
            else:
                dev.cc(b.cc, 127, ch)
                step(ctl, hub)
                assert hub.params[b.parameter] is True
                dev.cc(b.cc, 0, ch)
                step(ctl, hub)
                assert hub.params[b.parameter] is False
        else:
            dev.cc(b.cc, 127, ch)
            step(ctl, hub)
            assert fired[-1] == (b.action, b.argument, MIDI)
            count = len(fired)
            dev.cc(b.cc, 0, ch)  # the release does nothing
            step(ctl, hub)
            assert len(fired) == count
        if b.parameter:  # no other parameter moved
            after = dict(hub.params.values())
            assert {k for k in after if after[k] != before[k]} <= {b.parameter}
    # the original layout (REFERENCE.md section 7)
    if map_name == "bcf2000":
        got = {b.cc: b.target for b in midi_map.controls}
        assert [got[cc] for cc in range(81, 89)] == ["learning_rate", "mix_original", "channel_pos", "channel_span",
                                                     "pitch_pos", "pitch_span", "time_pos", "time_span"]
        assert [got[cc] for cc in range(1, 9)] == ["brightness", "start_clip", "layer", "time_jitter",
                                                   "activation_penalty", "eq_low", "eq_mid", "eq_high"]
        assert (got[75], got[66], got[67]) == ("keep", "restart", "select")


def test_log_and_integer_scales_come_from_the_registry(tmp_path):
    midi_map = MidiMap.from_doc({"name": "scales", "control": [
        {"cc": 10, "parameter": "crossfade"}, {"cc": 11, "parameter": "edge_count"},
        {"cc": 12, "parameter": "bars"}, {"note": 40, "parameter": "bloom"}]})
    hub, _, _ = make_hub()
    dev = Device("any")
    ctl = MidiController(hub, midi_map, backend=Studio(dev).ports(), soft_takeover=False)
    dev.cc(10, 64)
    dev.cc(11, 64)
    dev.cc(12, 64)
    dev.outbox.append(mido.Message("note_on", note=40, velocity=0))  # a released note: bloom off
    step(ctl, hub)
    u = 64 / 127
    assert hub.params["crossfade"] == pytest.approx(0.005 * 200 ** u)  # geometric, not 0.5
    assert hub.params["edge_count"] == pytest.approx(1_000 * 50_000 ** u)
    assert hub.params["bars"] == 5 and isinstance(hub.params["bars"], int)
    assert hub.params["bloom"] is False


def test_a_map_saves_and_loads_back_identically(tmp_path):
    for name in ("bcf2000", "generic8"):
        original = MidiMap.named(name)
        path = original.save(tmp_path / f"{name}.toml")
        assert MidiMap.load(path) == original


BAD_MAPS = [
    ('[[control]]\ncc = 81\nparameter = "lerning_rate"\n', "control 1 (cc 81): unknown parameter 'lerning_rate' (did you mean 'learning_rate'?)"),
    ('[[control]]\ncc = 66\naction = "selcet"\n', "unknown action 'selcet'"),
    ('[[control]]\ncc = 128\nparameter = "volume"\n', "control 1 (cc 128): cc 128 is outside 0-127"),
    ('[[control]]\nnote = -1\naction = "select"\n', "note -1 is outside 0-127"),
    ('channel = 17\n', "channel 17 is outside 1-16"),
    ('[[control]]\ncc = 1\nchannel = 0\nparameter = "volume"\n', "channel 0 is outside 1-16"),
    ('[[control]]\ncc = 5\nparameter = "volume"\n[[control]]\ncc = 5\nparameter = "bpm"\n',
     "control 2 (cc 5): cc 5 on channel 1 is already bound to volume (control 1)"),
    ('[[control]]\ncc = "81"\nparameter = "volume"\n', "cc must be a whole number"),
    ('[[control]]\ncc = 1\nparameter = "volume"\nmotor = "yes"\n', "motor must be true or false"),
    ('[[control]]\ncc = 1\nparameter = "volume"\nkind = "slider"\n', "kind must be one of"),
    ('[[control]]\nnote = 36\nparameter = "volume"\nkind = "fader"\n', "a note cannot be a fader"),
    ('[[control]]\ncc = 1\nparameter = "volume"\nkind = "switch"\n', "a switch sets an on/off parameter"),
    ('[[control]]\ncc = 1\nparmeter = "volume"\n', "unknown key 'parmeter'"),
    ('[[control]]\ncc = 1\nparameter = 3\n', "parameter must be a name"),
    ('program_change = "volume"\n', "program_change must be one of"),
    ('name = "x"\n[[control]\ncc = 1\n', "not valid TOML"),
]


@pytest.mark.parametrize("text,message", BAD_MAPS)
def test_an_invalid_map_is_a_one_line_error_naming_file_and_control(tmp_path, text, message):
    path = tmp_path / "broken.toml"
    path.write_text(text)
    with pytest.raises(ImmersionsError) as err:
        MidiMap.load(path)
    assert message in str(err.value)
    assert "broken.toml" in str(err.value) and "\n" not in str(err.value)


def test_load_map_of_a_bad_file_keeps_the_previous_map_and_watch_reloads(tmp_path, caplog):
    ctl, dev, hub, _, _ = rig("generic8", soft_takeover=False)
    previous = ctl.midi_map
    bad = tmp_path / "bad.toml"
    bad.write_text('[[control]]\ncc = 81\nparameter = "nope"\n')
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="immersions.control.midi"):
        assert ctl.load_map(bad) is False
    assert ctl.midi_map is previous
    assert len(caplog.records) == 1 and "keeping the MIDI map" in caplog.records[0].getMessage()
    assert ctl.load_map(tmp_path / "missing.toml") is False and ctl.midi_map is previous

    live = tmp_path / "live.toml"
    previous.save(live)
    ctl.watch(live)
    MidiMap.from_doc({"name": "edited", "control": [{"cc": 16, "parameter": "volume"}]}).save(live)
    os.utime(live, (live.stat().st_mtime + 5,) * 2)
    ctl.poll(1.0)
    assert ctl.midi_map.name == "edited" and ctl.midi_map.find((1, "cc", 16)).parameter == "volume"
    dev.cc(16, 0)
    step(ctl, hub, 1.1)
    assert hub.params["volume"] == 0.0
    live.write_text("this is = not = toml")  # a half-written edit
    os.utime(live, (live.stat().st_mtime + 10,) * 2)
    ctl.poll(2.0)
    assert ctl.midi_map.name == "edited"


# -- learn ------------------------------------------------------------------------------------

def test_learn_binds_the_next_control_and_the_map_saves_and_reloads(tmp_path):
    ctl, dev, hub, fired, changes = rig("generic8")
    with pytest.raises(ImmersionsError, match="not a parameter or an action"):
        ctl.learn("volumme")
    ctl.learn("crossfade")
    assert ctl.learning == "crossfade" and "learning crossfade" in ctl.status
    dev.outbox.append(mido.Message("note_on", note=60, velocity=90))  # a note cannot move a fade time
    dev.cc(90, 10, channel=3)
    step(ctl, hub)
    assert ctl.learning is None and changes == []  # learning changed nothing
    assert ctl.midi_map.find((3, "cc", 90)).parameter == "crossfade"
    assert ctl.midi_map.find((1, "note", 60)) is None
    dev.cc(90, 127, channel=3)  # passes the current value on its way up: takes over
    step(ctl, hub)
    assert hub.params["crossfade"] == pytest.approx(REGISTRY["crossfade"].maximum)

    # learning onto a bound control replaces its old binding
    ctl.learn("select")
    dev.cc(16, 127)  # was learning_rate
    step(ctl, hub)
    assert ctl.midi_map.find((1, "cc", 16)).action == "select"
    assert ctl.midi_map.bound_to("learning_rate") == []
    dev.cc(16, 0)
    dev.cc(16, 127)
    step(ctl, hub)
    assert fired == [("select", None, MIDI)]

    ctl.learn("bloom")
    ctl.cancel_learn()
    assert ctl.learning is None

    path = ctl.save_map(tmp_path / "mine.toml")
    again = MidiMap.load(path)
    assert again == ctl.midi_map
    hub2, _, _ = make_hub()
    dev2 = Device("nanoKONTROL2 SLIDER/KNOB")
    ctl2 = MidiController(hub2, again, backend=Studio(dev2).ports(), soft_takeover=False)
    dev2.cc(90, 0, channel=3)
    step(ctl2, hub2)
    assert hub2.params["crossfade"] == pytest.approx(REGISTRY["crossfade"].minimum)


# -- feedback ---------------------------------------------------------------------------------

def cc_of(name, value):
    return round(REGISTRY[name].to_unit(value) * 127)


def test_feedback_moves_motor_faders_once_and_never_echoes(caplog):
    ctl, dev, hub, _, changes = rig("bcf2000")
    motors = [b for b in ctl.midi_map.controls if b.motor and b.parameter]
    assert len(dev.shown) == len(motors)  # on connect every motor control jumps to the current value
    assert (81, cc_of("learning_rate", -2.0)) in dev.shown_cc()
    dev.shown.clear()

    hub.set("channel_pos", 0.25, GUI)
    assert dev.shown_cc() == [(83, 32)]
    assert dev.shown[0].channel == 0
    hub.set("channel_pos", 0.251, GUI)  # a different value, the same CC: not resent
    assert dev.shown_cc() == [(83, 32)]

    dev.cc(84, 100)  # the performer moves a fader: applied, not sent back
    step(ctl, hub)
    assert hub.params["channel_span"] == pytest.approx(100 / 127)
    assert dev.shown_cc() == [(83, 32)]
    hub.set("time_pos", 0.9, MIDI)  # any change from MIDI (another controller, a replay of it) is not sent
    assert dev.shown_cc() == [(83, 32)]

    hub.set("pitch_pos", 0.3, GUI)
    assert dev.shown_cc()[-1] == (85, cc_of("pitch_pos", 0.3))
    dev.cc(85, cc_of("pitch_pos", 0.3))  # the motor fader echoes what it was sent
    changes.clear()
    step(ctl, hub)
    assert hub.params["pitch_pos"] == 0.3 and changes == []  # not re-triggered, not rounded to a CC step
    dev.cc(85, 50)  # afterwards the fader moves as usual
    step(ctl, hub)
    assert hub.params["pitch_pos"] == pytest.approx(50 / 127)

    # automation (and presets, OSC, the autopilot) is shown on the device
    n = len(dev.shown)
    ctl.handle(mido.Message("control_change", control=86, value=10), source=AUTOMATION)
    hub.apply()
    assert hub.params["pitch_span"] == pytest.approx(10 / 127)
    assert dev.shown_cc()[n:] == [(86, 10)]
    hub.set("start_clip", "kick", GUI)
    assert dev.shown_cc()[-1] == (2, cc_of("start_clip", "kick"))
    assert hub.params.registry["start_clip"].from_unit(dev.shown_cc()[-1][1] / 127) == "kick"
    hub.set("keep", True, GUI)
    assert dev.shown_cc()[-1] == (75, 127)
    n = len(dev.shown)
    assert ctl.send_all() == len(motors) and len(dev.shown) == n + len(motors)


def test_a_momentary_switch_with_a_led_shows_the_state_and_every_press_counts():
    midi_map = MidiMap.from_doc({"control": [{"note": 40, "parameter": "keep", "momentary": True, "motor": True}]})
    hub, _, _ = make_hub()
    dev = Device("pads")
    ctl = MidiController(hub, midi_map, backend=Studio(dev).ports())
    assert [(m.type, m.note, m.velocity) for m in dev.shown] == [("note_on", 40, 0)]
    hub.set("keep", True, GUI)
    assert dev.shown[-1].velocity == 127
    dev.outbox.append(mido.Message("note_on", note=40, velocity=127))  # the same value as the LED: still a press
    dev.outbox.append(mido.Message("note_off", note=40))
    step(ctl, hub)
    assert hub.params["keep"] is False
    hub.set("keep", True, GUI)
    hub.set("keep", False, GUI)
    assert [m.velocity for m in dev.shown[-2:]] == [127, 0]


def test_no_feedback_when_switched_off():
    ctl, dev, hub, _, _ = rig("bcf2000", feedback=False)
    hub.set("channel_pos", 0.25, GUI)
    assert dev.shown == [] and ctl.send_all() == 0


# -- soft takeover ----------------------------------------------------------------------------

def test_soft_takeover_ignores_a_knob_until_it_passes_the_current_value():
    ctl, dev, hub, _, _ = rig("generic8")  # no motors: soft takeover applies
    assert hub.params["channel_pos"] == 0.5  # CC 63.5
    for v in (10, 40):
        dev.cc(1, v)
        step(ctl, hub)
        assert hub.params["channel_pos"] == 0.5
    dev.cc(1, 70)  # crossed 63.5 between 40 and 70: takes over
    step(ctl, hub)
    assert hub.params["channel_pos"] == pytest.approx(70 / 127)
    dev.cc(1, 80)
    step(ctl, hub)
    assert hub.params["channel_pos"] == pytest.approx(80 / 127)

    hub.set("channel_pos", 0.2, GUI)  # changed elsewhere: the fader stands at 80, the value at 25.4
    dev.cc(1, 90)
    step(ctl, hub)
    assert hub.params["channel_pos"] == 0.2
    dev.cc(1, 26)  # within one step of the value
    step(ctl, hub)
    assert hub.params["channel_pos"] == pytest.approx(26 / 127)

    # automation is not a hand on the knob: it always applies
    ctl.handle(mido.Message("control_change", control=16, value=127), source=AUTOMATION)
    hub.apply()
    assert hub.params["learning_rate"] == pytest.approx(2.0)


def test_soft_takeover_off_globally_per_control_and_for_motor_faders():
    ctl, dev, hub, _, _ = rig("generic8", soft_takeover=False)
    dev.cc(1, 10)
    step(ctl, hub)
    assert hub.params["channel_pos"] == pytest.approx(10 / 127)

    midi_map = MidiMap.from_doc({"control": [{"cc": 1, "parameter": "volume", "soft_takeover": False},
                                             {"cc": 2, "parameter": "bpm"}]})
    hub, _, _ = make_hub()
    dev = Device("x")
    ctl = MidiController(hub, midi_map, backend=Studio(dev).ports())
    dev.cc(1, 0)
    dev.cc(2, 0)
    step(ctl, hub)
    assert hub.params["volume"] == 0.0 and hub.params["bpm"] == 120.0

    ctl, dev, hub, _, _ = rig("bcf2000")  # motor faders follow the program: no takeover needed
    dev.cc(83, 5)
    step(ctl, hub)
    assert hub.params["channel_pos"] == pytest.approx(5 / 127)


# -- program change, hot-plug -----------------------------------------------------------------

def test_program_change_recalls_the_preset_with_that_number():
    ctl, dev, hub, fired, _ = rig("bcf2000")
    dev.outbox.append(mido.Message("program_change", program=4, channel=0))
    dev.outbox.append(mido.Message("program_change", program=1, channel=5))  # another channel: ignored
    step(ctl, hub)
    assert fired == [("preset", 5, MIDI)]

    hub, fired, _ = make_hub()
    dev = Device("x")
    ctl = MidiController(hub, MidiMap.from_doc({"program_change": "model"}), backend=Studio(dev).ports())
    dev.outbox.append(mido.Message("program_change", program=2))
    step(ctl, hub)
    assert fired == [("model", 2, MIDI)]


def test_an_unplugged_controller_is_found_again_without_a_restart(caplog):
    caplog.set_level(logging.INFO, logger="immersions.control.midi")
    dev = Device("BCF2000:BCF2000 MIDI 1 20:0")
    other = Device("Midi Through:Midi Through Port-0 14:0")
    studio = Studio(other, dev)
    hub, _, _ = make_hub()
    ctl = MidiController(hub, MidiMap.named("bcf2000"), backend=studio.ports())
    assert ctl.connected and ctl.status == dev.name
    step(ctl, hub, 0.0)
    dev.plugged = False
    step(ctl, hub, 1.0)
    assert ctl.connected  # noticed at the next scan, 2 s after the first poll
    step(ctl, hub, 2.1)
    assert not ctl.connected and ctl.status == "no controller"
    hub.set("learning_rate", 1.0, GUI)  # changes while it is away are fine
    dev.name = "BCF2000:BCF2000 MIDI 1 24:0"  # plugged back in, ALSA numbers it anew
    dev.plugged = True
    step(ctl, hub, 3.0)
    assert not ctl.connected
    step(ctl, hub, 4.2)
    assert ctl.connected and ctl.status == dev.name
    assert (81, cc_of("learning_rate", 1.0)) in dev.shown_cc()  # the faders jump to what changed
    dev.cc(83, 0)
    step(ctl, hub, 4.3)
    assert hub.params["channel_pos"] == 0.0
    text = [r.getMessage() for r in caplog.records]
    assert sum("disconnected" in t for t in text) == 1 and sum("connected (map" in t for t in text) == 2

    dev.broken = True  # a port that fails is dropped at once, then looked for again
    step(ctl, hub, 4.4)
    assert not ctl.connected
    dev.broken = False
    step(ctl, hub, 6.5)
    assert ctl.connected


def test_no_controller_is_one_info_line_and_the_show_goes_on(caplog):
    caplog.set_level(logging.INFO, logger="immersions.control.midi")
    studio = Studio(Device("Midi Through Port-0"))
    hub, _, _ = make_hub()
    ctl = MidiController(hub, MidiMap.named("bcf2000"), backend=studio.ports())
    for t in (0.0, 2.5, 5.0, 7.5):
        step(ctl, hub, t)
    assert not ctl.connected and ctl.status == "no controller"
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["no MIDI input matching 'BCF2000' (found: Midi Through Port-0); running without a controller"]
    hub.set("volume", 0.5, GUI)
    studio.devices.append(Device("USB Keys"))  # not the map's device, but the only one: used
    step(ctl, hub, 10.0)
    assert ctl.connected and ctl.status == "USB Keys"

    hub, _, _ = make_hub()
    ctl = MidiController(hub, MidiMap.named("bcf2000"), port="BCF", backend=Studio(Device("USB Keys")).ports())
    assert not ctl.connected  # a port asked for by name is not replaced by another

    def broken():
        raise RuntimeError("MidiInAlsa::initialize: error creating ALSA sequencer client object.")

    caplog.clear()
    dead = MidiPorts(inputs=broken, outputs=broken, open_input=None, open_output=None)
    ctl = MidiController(hub, MidiMap.named("bcf2000"), backend=dead)
    for t in range(0, 200, 2):
        step(ctl, hub, float(t))
    assert not ctl.connected
    assert len(caplog.records) == 1 and "running without a controller" in caplog.records[0].getMessage()


@pytest.mark.skipif(not sys.platform.startswith("linux") or os.path.exists("/dev/snd/seq"),
                    reason="needs Linux without an ALSA sequencer (this machine has one)")
def test_rescans_without_a_sequencer_leave_stderr_quiet(capfd, caplog):
    caplog.set_level(logging.INFO, logger="immersions.control.midi")
    # rtmidi itself, asked directly, prints ALSA's C-library lines on fd 2: what we keep out
    with pytest.raises(Exception):
        mido.Backend("mido.backends.rtmidi").get_input_names()
    assert "snd_seq_hw_open" in capfd.readouterr().err
    hub, _, _ = make_hub()
    ctl = MidiController(hub, MidiMap.named("bcf2000"))  # mido's real rtmidi backend
    for t in range(0, 600, 2):  # ten minutes of rescans
        step(ctl, hub, float(t))
    assert not ctl.connected
    assert capfd.readouterr().err == ""
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "no ALSA sequencer" in lines[0] and "modprobe snd-seq" in lines[0], lines


def test_a_failed_backend_retried_after_the_first_line_prints_nothing_on_stderr(capfd, caplog):
    """A backend whose C library writes to fd 2 on every failure (as ALSA does)."""
    caplog.set_level(logging.INFO, logger="immersions.control.midi")

    def noisy():
        os.write(2, b"ALSA lib seq_hw.c:466:(snd_seq_hw_open) open /dev/snd/seq failed\n")
        raise RuntimeError("MidiInAlsa::initialize: error creating ALSA sequencer client object.")

    hub, _, _ = make_hub()
    ctl = MidiController(hub, MidiMap.named("bcf2000"), backend=MidiPorts(noisy, noisy, None, None))
    first = capfd.readouterr().err
    assert first.count("snd_seq_hw_open") == 1  # the first try is not hidden: it may say why
    for t in range(0, 600, 2):
        step(ctl, hub, float(t))
    assert capfd.readouterr().err == ""
    assert len(caplog.records) == 1


# -- automation -------------------------------------------------------------------------------

def test_automation_replays_at_the_written_times_with_tempo_changes(tmp_path):
    cc = lambda value: mido.Message("control_change", control=1, value=value)  # generic8: channel_pos
    path = write_automation(tmp_path / "take.mid", [(1.25, cc(30)), (0.0, cc(10)), (0.5, cc(20)),
                                                   (2.0, mido.Message("program_change", program=2))], bpm=90)
    a = Automation.load(path)
    assert len(a) == 4 and a.duration == pytest.approx(2.0, abs=1e-3)
    assert [m.value for m in a.due(0.0)] == [10]
    assert a.due(0.49) == []
    assert [m.value for m in a.due(0.501)] == [20]
    assert [m.value for m in a.due(1.3)] == [30]
    assert not a.done
    assert [m.type for m in a.due(10.0)] == ["program_change"] and a.done
    a.reset()
    assert len(a.due(10.0)) == 4

    # two tracks; the tempo doubles after two beats: 0.5 s a beat, then 0.25 s
    tempo = mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=500_000, time=0),
                            mido.MetaMessage("set_tempo", tempo=250_000, time=960)])
    notes = mido.MidiTrack([cc(1).copy(time=480), cc(2).copy(time=480), cc(3).copy(time=480),
                            mido.Message("note_on", note=36, velocity=100, time=960)])
    mido.MidiFile(type=1, ticks_per_beat=480, tracks=[tempo, notes]).save(tmp_path / "tempo.mid")
    a = Automation.load(tmp_path / "tempo.mid")
    assert [m.time for m in a.messages] == pytest.approx([0.5, 1.0, 1.25, 1.75])
    assert [m.value for m in a.due(1.0)] == [1, 2]
    assert [m.value for m in a.due(1.25)] == [3]
    assert a.due(1.7) == [] and [m.note for m in a.due(1.75)] == [36]

    # replayed through a controller: applied at once, though soft takeover holds the real fader
    ctl, dev, hub, fired, changes = rig("generic8")
    a = Automation.load(path)
    for t in (0.0, 0.6):
        for msg in a.due(t):
            ctl.handle(msg, source=AUTOMATION)
        hub.apply()
    assert hub.params["channel_pos"] == pytest.approx(20 / 127)
    assert {c.source for c in changes} == {AUTOMATION}
    for msg in a.due(3.0):
        ctl.handle(msg, source=AUTOMATION)
    hub.apply()
    assert fired == [("preset", 3, AUTOMATION)]


def test_a_malformed_or_missing_midi_file_is_a_one_line_error(tmp_path):
    bad = tmp_path / "bad.mid"
    bad.write_bytes(b"MThd\x00\x00\x00\x06\x00\x01\x00\x02\x01\xe0MTrk\x00\x00\x00\x40\x00\xb0")
    for path, message in ((bad, "bad.mid is not a readable MIDI file"), (tmp_path / "none.mid", "no MIDI file at")):
        with pytest.raises(ImmersionsError) as err:
            Automation.load(path)
        assert message in str(err.value) and "\n" not in str(err.value)
    text = tmp_path / "notes.mid"
    text.write_text("not midi at all")
    with pytest.raises(ImmersionsError, match="notes.mid is not a readable MIDI file"):
        Automation.load(text)


# -- command line -----------------------------------------------------------------------------

def test_monitor_prints_messages_decoded_against_the_map_and_record_writes_automation(tmp_path):
    dev = Device("BCF2000 Port 1")
    studio = Studio(Device("Midi Through Port-0"), dev)
    dev.cc(83, 64)
    dev.cc(67, 127)
    dev.cc(20, 5)
    dev.outbox.append(mido.Message("program_change", program=3))
    lines: list[str] = []
    assert monitor(studio.ports(), MidiMap.named("bcf2000"), seconds=0.05, out=lines.append) == 4
    assert lines[1:] == ["cc 83 ch1 value 64 -> channel_pos = 0.504", "cc 67 ch1 value 127 -> select",
                         "cc 20 ch1 value 5 (not in the map)", "program 3 ch1 -> preset 4"]
    with pytest.raises(ImmersionsError, match="no MIDI input matching 'nanoKONTROL'"):
        monitor(studio.ports(), MidiMap.named("bcf2000"), port="nanoKONTROL", seconds=0.01, out=lines.append)

    dev.cc(83, 1)
    dev.cc(84, 2)
    assert record(studio.ports(), tmp_path / "take.mid", port="BCF", seconds=0.05, out=lines.append) == 2
    a = Automation.load(tmp_path / "take.mid")
    assert [(m.control, m.value) for m in a.due(1.0)] == [(83, 1), (84, 2)]
    assert a.map_name == "bcf2000"  # the take names the map made for its port: replay uses it


def test_every_midi_command_defaults_to_the_map_made_for_the_port(tmp_path):
    """`midi monitor` and `midi record` without --map choose as `perform` does: the shipped map
    made for the port (the first such port when none is named), else generic8."""
    bcf, nano, other = Device("BCF2000 Port 1"), Device("nanoKONTROL2 MIDI 1"), Device("Some Keyboard")
    studio = Studio(Device("Midi Through Port-0"), other, nano, bcf)
    lines: list[str] = []
    bcf.cc(83, 64)
    assert monitor(studio.ports(), port="BCF", seconds=0.05, out=lines.append) == 1
    assert "with map 'bcf2000'" in lines[0] and lines[1] == "cc 83 ch1 value 64 -> channel_pos = 0.504"
    lines.clear()
    nano.cc(1, 127)
    bcf.plugged = False
    assert monitor(studio.ports(), seconds=0.05, out=lines.append) == 1  # the port a shipped map is for, not the first
    assert lines[0].startswith("listening to 'nanoKONTROL2 MIDI 1' with map 'generic8'")
    bcf.plugged = True
    for port, expected in (("BCF", "bcf2000"), ("nano", "generic8"), ("Keyboard", "generic8")):
        take = tmp_path / f"{port}.mid"
        record(studio.ports(), take, port=port, seconds=0.01, out=lines.append)
        assert Automation.load(take).map_name == expected, port
        assert f"with map '{expected}'" in lines[-2] and f"replayed through map '{expected}'" in lines[-1]
    mine = MidiMap.named("bcf2000").save(tmp_path / "mine.toml")
    record(studio.ports(), tmp_path / "mine.mid", port="Keyboard", seconds=0.01, out=lines.append,
           midi_map=MidiMap.named(mine))
    assert Automation.load(tmp_path / "mine.mid").map_name == str(mine)


def test_midi_ports_command_says_clearly_what_it_found(capsys):
    from immersions.cli.midi import add_midi_parser

    parser = argparse.ArgumentParser()
    add_midi_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["midi", "ports"])
    try:
        assert args.func(args) == 0
    except ImmersionsError as err:  # a machine without MIDI (no ALSA sequencer): said, not listed as empty
        assert "the MIDI backend cannot start" in str(err)
    else:
        out = capsys.readouterr().out.strip().splitlines()
        assert out and all(line.startswith(("in ", "out ", "no MIDI ports")) for line in out)
    args = parser.parse_args(["midi", "check", "generic8"])
    assert args.func(args) == 0 and "19 parameters, 11 actions" in capsys.readouterr().out


def test_midi_ports_exits_2_in_one_line_when_the_backend_cannot_start():
    done = subprocess.run([sys.executable, "-m", "immersions", "midi", "ports", "--backend", "mido.backends.no_such"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("immersions: error: the MIDI backend cannot start")
    assert "no_such" in lines[0] and done.stdout == ""
