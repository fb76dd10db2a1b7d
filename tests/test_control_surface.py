"""The control surface wired to a real performance: MIDI automation through a shipped map,
presets by Program Change, recording, OSC over a real socket, and the headless command."""

import json
import socket
import time
import wave

import mido
import pytest
from pythonosc.udp_client import SimpleUDPClient

from immersions.control.automation import write_automation
from immersions.control.midi import MidiMap, MidiPorts
from immersions.registry import REGISTRY
from immersions.control.presets import PresetLibrary
from immersions.control.surface import ControlSurface, SurfaceOptions
from immersions.performance.headless import perform_headless
from immersions.performance.performance import OfflineClock, Performance
from immersions.visual.gl import offscreen_context

from helpers import run_cli


def cc(control, value):
    return mido.Message("control_change", channel=0, control=control, value=value)


@pytest.fixture
def take(tmp_path):
    """A rehearsal on the BCF2000: layer knob down, a fader, keep on, record 1 s .. 3.5 s, preset 2."""
    return write_automation(tmp_path / "take.mid", [
        (0.2, cc(3, 0)),  # knob 3: layer -> the first tap
        (0.4, cc(84, 127)),  # fader 4: channel_span -> all channels
        (0.6, cc(75, 127)),  # keep on
        (1.0, cc(72, 127)), (1.05, cc(72, 0)),  # record button: press, release
        (3.5, cc(72, 127)), (3.55, cc(72, 0)),  # and again: stop
        (4.0, mido.Message("program_change", channel=0, program=1)),  # preset 2
        (4.2, cc(2, 0)),  # knob 2: start_clip -> silence
    ], midi_map="bcf2000")  # as `immersions midi record` writes it: the take names its map


def test_headless_automation_moves_the_performance_and_reports_its_state(model_dir, take, tmp_path):
    state = tmp_path / "state.json"
    params = REGISTRY.defaults().replace(morph_loops=0)  # the preset lands at once
    doc = perform_headless(5.0, (160, 90), fps=20, model=str(model_dir), device="cpu", params=params,
                           controls=SurfaceOptions(midi=False, midi_map="bcf2000", automation=str(take),
                                                   recordings=str(tmp_path / "rec")),
                           state_out=state)
    assert json.loads(state.read_text()) == json.loads(json.dumps(doc))
    assert doc["automation"]["replayed"] == doc["automation"]["messages"] == 9 and doc["automation"]["done"]
    preset = PresetLibrary().get(2)
    assert doc["preset"] == preset.name
    for name, value in preset.values.items():  # the preset was recalled after the knobs moved
        assert doc["params"][name] == pytest.approx(value), name
    assert doc["params"]["start_clip"] == "silence"  # moved after the preset
    recording = doc["last_recording"]
    with wave.open(recording) as w:  # 1.0 s .. 3.5 s of heard time
        assert abs(w.getnframes() / w.getframerate() - 2.5) < 0.1
    assert doc["clips_heard"] >= 1 and doc["rejected"] == 0


def test_perform_headless_command_contract(model_dir, take, tmp_path):
    state = tmp_path / "state.json"
    # no --map: the take names the map it was played on, and the replay says which map it used
    result = run_cli("perform", "--headless", "--seconds", "2", "--size", "160x90", "--model",
                     str(model_dir), "--device", "cpu", "--automation", str(take), "--no-midi",
                     "--state-out", str(state), "--recordings", str(tmp_path / "rec"))
    assert result.returncode == 0, result.stderr
    doc = json.loads(state.read_text())
    assert doc["params"]["layer"] == 0.0 and doc["params"]["channel_span"] == 1.0 and doc["params"]["keep"] is True
    assert doc["automation"]["replayed"] == 5  # the messages up to 2 s
    assert doc["automation"]["map"] == "bcf2000"
    (said,) = [line for line in result.stderr.splitlines() if "automation" in line and "MIDI map" in line]
    assert f"automation {take}: 9 messages over 4.2 s, through MIDI map 'bcf2000' (named in the take)" in said


def test_the_replay_map_is_the_maps_flag_else_the_takes_else_the_one_every_midi_command_defaults_to(tmp_path):
    from immersions.control.automation import Automation
    from immersions.control.surface import replay_map

    named = Automation.load(write_automation(tmp_path / "named.mid", [(0.0, cc(81, 1))], midi_map="bcf2000"))
    bare = Automation.load(write_automation(tmp_path / "bare.mid", [(0.0, cc(81, 1))]))
    assert (named.map_name, bare.map_name) == ("bcf2000", None)
    no_ports = MidiPorts(inputs=lambda: [], outputs=lambda: [], open_input=None, open_output=None)
    nano = MidiPorts(inputs=lambda: ["Midi Through Port-0", "nanoKONTROL2 MIDI 1"], outputs=lambda: [],
                     open_input=None, open_output=None)
    bcf = MidiPorts(inputs=lambda: ["BCF2000 Port 1"], outputs=lambda: [], open_input=None, open_output=None)
    cases = [
        (SurfaceOptions(midi_map="generic8"), named, no_ports, "generic8", "--map"),
        (SurfaceOptions(), named, nano, "bcf2000", "named in the take"),
        (SurfaceOptions(), bare, bcf, "bcf2000", "made for 'BCF2000 Port 1'"),
        (SurfaceOptions(), bare, nano, "generic8", "made for 'nanoKONTROL2 MIDI 1'"),
        (SurfaceOptions(), bare, no_ports, "generic8", "the default"),
    ]
    for options, automation, ports, stem, why in cases:
        midi_map, reason = replay_map(options, automation, ports)
        assert (midi_map.path.stem, reason) == (stem, why)


def test_a_bad_map_or_automation_file_fails_in_one_line(model_dir, tmp_path):
    bad_map = tmp_path / "bad.toml"
    bad_map.write_text('name = "x"\n[[control]]\ncc = 300\nparameter = "volume"\n')
    bad_mid = tmp_path / "bad.mid"
    bad_mid.write_bytes(b"MThd not really a midi file")
    for extra in (["--map", str(bad_map)], ["--automation", str(bad_mid)]):
        result = run_cli("perform", "--headless", "--seconds", "1", "--model", str(model_dir), *extra)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith("immersions: error:"), result.stderr
        assert str(tmp_path) in lines[0]


def test_osc_and_midi_feedback_meet_in_one_performance(model_dir, tmp_path):
    """An OSC change reaches the engine and goes out to the controller's motor fader once."""
    ctx = offscreen_context()
    perf = Performance(ctx, (160, 90), OfflineClock(), model=str(model_dir), device="cpu")
    sent = []

    class Port(mido.ports.BaseIOPort):  # an in-memory port standing in for the controller's
        def _send(self, msg):
            sent.append(msg)

        def _receive(self, block=True):
            return None

    name = "BCF2000 Port 1"
    ports = MidiPorts(inputs=lambda: [name], outputs=lambda: [name], open_input=lambda n: Port(n),
                      open_output=lambda n: Port(n))
    surface = ControlSurface(perf, SurfaceOptions(osc_port=0, recordings=str(tmp_path)), ports=ports)
    try:
        assert surface.midi.connected and surface.midi.midi_map.name.startswith("Behringer")  # chosen by port
        sent.clear()  # what connecting sent (the whole state, for the motor faders)
        host, port = surface.osc.address
        SimpleUDPClient(host, port).send_message("/immersions/learning_rate", 0.5)
        deadline = time.time() + 5
        while perf.params["learning_rate"] != 0.5 and time.time() < deadline:
            time.sleep(0.02)
            perf.controls.apply()
        assert perf.params["learning_rate"] == 0.5 and perf.engine.params["learning_rate"] == 0.5
        unit = REGISTRY["learning_rate"].to_unit(0.5)
        assert [(m.control, m.value) for m in sent if m.type == "control_change"] == [(81, round(unit * 127))]
        # a query over a real socket answers with the current value
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(5)
            s.bind(("127.0.0.1", 0))
            from pythonosc.osc_message_builder import OscMessageBuilder
            from pythonosc.osc_message import OscMessage

            s.sendto(OscMessageBuilder("/immersions/learning_rate").build().dgram, (host, port))
            reply = OscMessage(s.recv(4096))
            assert reply.address == "/immersions/learning_rate" and reply.params == [0.5]
    finally:
        surface.close()
        perf.close()
        ctx.release()
    assert isinstance(MidiMap.named("generic8"), MidiMap)


def test_the_performers_own_settings_share_one_config_folder(tmp_path, monkeypatch):
    from immersions.control.presets import user_presets_dir
    from immersions.control.surface import user_maps_dir
    from immersions.paths import config_dir

    monkeypatch.delenv("IMMERSIONS_PRESETS", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    assert config_dir() == tmp_path / "config" / "immersions"
    assert user_maps_dir() == config_dir() / "controllers" and user_presets_dir() == config_dir() / "presets"
    monkeypatch.delenv("XDG_CONFIG_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert config_dir() == tmp_path / "home" / ".config" / "immersions"
    assert user_maps_dir().parent == user_presets_dir().parent == config_dir()
