import logging
import socket
import time

import pytest
from pythonosc.osc_message import OscMessage
from pythonosc.udp_client import SimpleUDPClient

from immersions.control.hub import GUI, MIDI, OSC, ControlHub, Values
from immersions.control.osc import OscServer
from immersions.registry import CHOICE, INTEGER, REGISTRY, TOGGLE
from immersions.errors import ImmersionsError


Params = Values  # a real hub target: a Snapshot validated by the registry


@pytest.fixture
def hub():
    return ControlHub(Params())


@pytest.fixture
def server(hub):
    with OscServer(hub, 0) as server:
        yield server
    assert not server.running


def client(server) -> SimpleUDPClient:
    host, port = server.address
    return SimpleUDPClient(host, port)


def settle(server, handled: int, timeout: float = 5.0) -> None:
    """Wait until the server thread has handled `handled` messages in all."""
    deadline = time.monotonic() + timeout
    while server.received < handled:
        assert time.monotonic() < deadline, f"the OSC server handled {server.received} of {handled} messages"
        time.sleep(0.002)


def replies(remote: SimpleUDPClient, count: int, timeout: float = 2.0) -> list[tuple]:
    out = []
    for _ in range(count):
        data = remote.receive(timeout)
        assert data, f"got {len(out)} of {count} replies"
        message = OscMessage(data)
        out.append((message.address, *message.params))
    return out


def silent(remote: SimpleUDPClient, wait: float = 0.2) -> bool:
    return remote.receive(wait) == b""


def test_every_parameter_of_every_group_can_be_set(hub, server):
    remote = client(server)
    sent = {}
    for p in REGISTRY:
        value = p.from_unit(0.7 if p.default != p.from_unit(0.7) else 0.2)
        # as OSC controllers send them: toggles 1/0, choices strings, whole numbers as floats
        sent[p.name] = value
        remote.send_message(f"/immersions/{p.name}", int(value) if p.scale == TOGGLE else
                            float(value) if p.scale == INTEGER else value)
    settle(server, len(sent))
    assert hub.params["layer"] == REGISTRY["layer"].default  # queued, not yet applied
    hub.apply()
    assert server.rejected == 0
    for name, value in sent.items():
        assert hub.params[name] != REGISTRY[name].default
        if REGISTRY[name].scale in (TOGGLE, CHOICE, INTEGER):
            assert hub.params[name] == value and type(hub.params[name]) is type(value)
        else:
            assert hub.params[name] == pytest.approx(value, rel=1e-6)  # OSC floats are 32-bit
    assert {REGISTRY[name].group for name in sent} == set(REGISTRY.groups())


def test_toggle_words_and_whole_floats(hub, server):
    remote = client(server)
    for address, value in (("keep", "on"), ("bloom", "false"), ("camera_follow", 0), ("bars", 4.0), ("morph_loops", 3)):
        remote.send_message(f"/immersions/{address}", value)
    settle(server, 5)
    hub.apply()
    assert (hub.params["keep"], hub.params["bloom"], hub.params["camera_follow"]) == (True, False, False)
    assert hub.params["bars"] == 4 and hub.params["morph_loops"] == 3 and server.rejected == 0


def test_a_query_is_answered_to_the_sender_and_state_sends_everything(hub, server):
    remote = client(server)
    remote.send_message("/immersions/layer", 0.25)
    remote.send_message("/immersions/layer", None)  # asked before the main thread applied it
    assert replies(remote, 1) == [("/immersions/layer", 0.5)]
    hub.apply()
    for name in ("layer", "bloom", "optimizer", "bars"):
        remote.send_message(f"/immersions/{name}", None)
    assert replies(remote, 4) == [("/immersions/layer", 0.25), ("/immersions/bloom", 1),
                                  ("/immersions/optimizer", "sgd"), ("/immersions/bars", 2)]
    remote.send_message("/immersions/state", None)
    state = dict(replies(remote, len(REGISTRY)))
    assert set(state) == {f"/immersions/{p.name}" for p in REGISTRY}
    for p in REGISTRY:
        expected = hub.params[p.name]
        assert state[f"/immersions/{p.name}"] == pytest.approx(int(expected) if p.scale == TOGGLE else expected)
    other = client(server)  # another client gets its own answers, the first one nothing
    other.send_message("/immersions/volume", None)
    assert replies(other, 1) == [("/immersions/volume", pytest.approx(0.8))]
    assert silent(remote)


def test_bad_values_are_rejected_and_the_last_good_value_stays(hub, server, caplog):
    remote = client(server)
    remote.send_message("/immersions/learning_rate", -3.0)
    remote.send_message("/immersions/learning_rate", 9.0)  # out of range
    remote.send_message("/immersions/learning_rate", "fast")  # not a number
    remote.send_message("/immersions/learning_rate", [1.0, 2.0])  # two values
    remote.send_message("/immersions/bars", 2.5)  # not whole
    remote.send_message("/immersions/optimizer", "rmsprop")
    remote.send_message("/immersions/bloom", "maybe")
    settle(server, 7)
    hub.apply()
    assert server.rejected == 6 and hub.rejected == 0  # refused at the door, never queued
    assert hub.params["learning_rate"] == -3.0 and hub.params["bars"] == 2 and hub.params["optimizer"] == "sgd"
    assert any("learning_rate: 9 is outside -5 .. 2" in r.getMessage() for r in caplog.records)


def test_presets_records_and_any_action_reach_the_hub(hub, server):
    calls = []
    for action in ("preset", "preset_next", "preset_previous", "record_start", "record_stop", "export_clip", "model"):
        hub.handle(action, lambda arg, source, action=action: calls.append((action, arg, source)))
    remote = client(server)
    for address, value in (("/immersions/preset/3", None), ("/immersions/preset", 2), ("/immersions/preset", 4.0),
                           ("/immersions/preset", "pads"), ("/immersions/preset/next", None),
                           ("/immersions/preset/previous", None), ("/immersions/record/start", None),
                           ("/immersions/record/stop", None), ("/immersions/action/export_clip", None),
                           ("/immersions/action/model", 1.0), ("/immersions/action/model", "default")):
        remote.send_message(address, value)
    settle(server, 11)
    assert calls == []  # actions run on the main thread
    hub.apply()
    assert calls == [("preset", 3, OSC), ("preset", 2, OSC), ("preset", 4, OSC), ("preset", "pads", OSC),
                     ("preset_next", None, OSC), ("preset_previous", None, OSC), ("record_start", None, OSC),
                     ("record_stop", None, OSC), ("export_clip", None, OSC), ("model", 1, OSC), ("model", "default", OSC)]
    assert server.rejected == 0


def test_unknown_addresses_and_garbage_are_counted_and_the_server_keeps_running(hub, server, caplog):
    remote = client(server)
    remote.send_message("/immersions/nope", 1.0)
    remote.send_message("/other/layer", 1.0)
    remote.send_message("/immersions/action/launch_rockets", None)
    remote.send_message("/immersions/preset/0", None)
    remote.send_message("/immersions/preset", 1.5)
    remote.send_message("/immersions/layer/deeper", 0.1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as raw:
        raw.sendto(b"not an OSC packet", server.address)
    settle(server, 7)
    assert server.rejected == 7
    flood = 200
    caplog.clear()
    for i in range(flood):
        remote.send_message("/immersions/nope", 1.0)
        if i % 20 == 19:  # in bursts a socket buffer holds (UDP drops what overflows it)
            settle(server, 8 + i)
    assert server.rejected == 7 + flood
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) <= 3  # one line a second at most, not 200
    remote.send_message("/immersions/volume", None)
    assert replies(remote, 1) == [("/immersions/volume", pytest.approx(0.8))]
    hub.apply()
    assert hub.rejected == 0


def test_subscribers_hear_every_change_but_not_their_own_echo(hub, server):
    listener, player = client(server), client(server)
    listener.send_message("/immersions/subscribe", None)
    player.send_message("/immersions/subscribe", None)
    settle(server, 2)
    assert len(server.subscribers) == 2
    player.send_message("/immersions/layer", 0.25)
    settle(server, 3)
    hub.apply()
    assert replies(listener, 1) == [("/immersions/layer", 0.25)]
    assert silent(player)  # it sent that value itself
    hub.set("bloom", False, MIDI)  # a change from anywhere else reaches both
    assert replies(listener, 1) == replies(player, 1) == [("/immersions/bloom", 0)]
    listener.send_message("/immersions/unsubscribe", None)
    settle(server, 4)
    hub.set("volume", 0.5, GUI)
    assert replies(player, 1) == [("/immersions/volume", 0.5)] and silent(listener)


def test_binds_loopback_by_default_and_stop_frees_the_port(hub, caplog):
    server = OscServer(hub, 0)
    server.start()
    host, port = server.address
    assert host == "127.0.0.1" and port > 0 and server._thread.is_alive()
    thread = server._thread
    server.stop()
    assert not thread.is_alive() and not server.running
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", port))  # the port is free again
        with pytest.raises(ImmersionsError, match=f"cannot listen for OSC on 127.0.0.1:{port}"):
            OscServer(hub, port).start()
    caplog.set_level(logging.INFO)
    with OscServer(hub, 0, host="0.0.0.0") as wide:
        host, port = wide.address
    assert host == "0.0.0.0"
    assert any(r.getMessage() == f"OSC listening on 0.0.0.0:{port} — reachable from the network"
               for r in caplog.records)
