"""Remote dreaming: the wire format, and a real server and RemoteEngine on 127.0.0.1 (real
ZeroMQ sockets, real CURVE keys, real DreamEngines on the micro model, a real server
process killed with SIGKILL)."""

import contextlib
import functools
import os
import select
import shutil
import socket
import stat
import threading
import time

import msgpack
import numpy as np
import pytest
import zmq

from immersions.registry import REGISTRY
from immersions.frames import FRAMES_PER_LOOP, HUD_BINS, HUD_FRAMES, DreamFrame
from immersions.dream.loop import start_clip
from immersions.selection import Region
from immersions.errors import ImmersionsError
from immersions.model.checkpoint import load_model
from immersions.model.stats import load_stats
from immersions.remote import protocol as P
from immersions.bench.remote import ServerProcess, free_port
from immersions.cli import main as remote_main
from immersions.cli.remote import remote_engine_factory
from immersions.remote.client import RemoteDeck, RemoteEngine
from immersions.remote.keys import generate_keys, load_client_keys
from immersions.remote.server import DreamServer

SR = 16000


def wait_for(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False


@pytest.fixture(scope="module")
def micro(micro_model_dir):
    model = load_model(micro_model_dir)
    return model, load_stats(model)


def serve(model_dir, workers=1, keys=None, **kw) -> DreamServer:
    server = DreamServer("tcp://127.0.0.1:*", [str(model_dir)], ["cpu"], workers, keys=keys,
                         insecure=keys is None, **kw)
    server.start()
    return server


def client(micro, address, **kw) -> RemoteEngine:
    model, stats = micro
    engine = RemoteEngine(model, stats, start_clip("noise", 4 * SR, SR), REGISTRY.defaults(), address=address, **kw)
    engine.select(Region(3, (0.0, 0.5)))
    return engine


@pytest.fixture
def server(micro_model_dir):
    s = serve(micro_model_dir)
    yield s
    s.stop()


# -- the wire format -----------------------------------------------------------------------------

def a_frame(nodes=500, samples=4000) -> DreamFrame:
    rng = np.random.default_rng(1)
    acts = (rng.standard_normal((nodes, FRAMES_PER_LOOP)) * rng.uniform(0.01, 50, (nodes, 1))
            + rng.uniform(-20, 20, (nodes, 1))).astype(np.float16)
    acts[7] = 3.0  # a constant row comes back exactly
    return DreamFrame(41, rng.uniform(-1, 1, samples).astype(np.float32), SR, acts, rng.random(nodes) < 0.3, 0.25,
                      17, 4.5, 1, rng.integers(0, 256, (HUD_BINS, HUD_FRAMES), dtype=np.uint8), "/srv/models/micro")


def wire(message) -> list[bytes]:
    """As it arrives: every part a separate bytes object."""
    return [bytes(memoryview(p).cast("B")) if not isinstance(p, bytes) else p for p in P.encode(message)]


def test_a_frame_round_trips_within_quantization():
    frame = a_frame()
    received = P.decode(wire(P.frame_message(frame, worker=3, serial=9)), P.FROM_SERVER)
    assert isinstance(received, P.Frame) and received.worker == 3 and received.serial == 9
    out = received.to_dream_frame(5, "/laptop/models/micro")
    assert isinstance(out, DreamFrame) and out.serial == 5 and out.worker == 3
    assert out.model_name == "/laptop/models/micro" and received.model == "micro"  # folder names on the wire
    assert np.array_equal(out.clip, frame.clip) and out.clip.dtype == np.float32  # the sound is exact
    assert np.array_equal(out.selection, frame.selection) and np.array_equal(out.scalogram, frame.scalogram)
    assert (out.sample_rate, out.objective, out.step, out.steps_per_second, out.nan_resets) == (SR, 0.25, 17, 4.5, 1)
    assert out.activations.dtype == np.float16 and out.activations.shape == frame.activations.shape
    a = frame.activations.astype(np.float32)
    bound = (a.max(axis=1) - a.min(axis=1)) / 255 / 2
    rounding = np.abs(a).max(axis=1) * 2.0**-20  # float32 arithmetic, a few ulps
    restored = P.dequantize_rows(received.act_q, received.act_lo, received.act_step)
    assert (np.abs(restored - a).max(axis=1) <= bound + rounding).all()
    half_ulp = np.abs(a).max(axis=1) * 2.0**-11  # the float16 a DreamFrame holds
    assert (np.abs(out.activations.astype(np.float32) - a).max(axis=1) <= bound + half_ulp + rounding).all()
    assert np.array_equal(out.activations[7], frame.activations[7])


def test_frame_size_fits_the_budget_for_the_shipped_models():
    """2 MB a frame for a 4-s loop at 16 kHz; the 44.1-kHz default's float32 clip is 450 kB more
    (176 400 samples instead of 64 000), the activations as many bytes as before."""
    from immersions.bench.remote import frame_bytes_for

    from immersions.model.checkpoint import load_model

    for name, budget in (("blend", 2 * 10**6), (None, 2 * 10**6 + 4 * (176_400 - 64_000))):
        model = load_model(name)  # a 4-s loop
        size = frame_bytes_for(model.graph_nodes, int(model.cfg.loop_seconds * model.cfg.scalogram.sample_rate))["bytes"]
        assert size <= budget, (name, size)


def header(**fields) -> bytes:
    return msgpack.packb({"v": P.PROTOCOL_VERSION, **fields})


@pytest.mark.parametrize("parts, reason", [
    ([b"\xc1"], "not valid msgpack"),
    ([msgpack.packb([1, 2])], "not a msgpack map"),
    ([msgpack.packb({"type": "pause"})], "no protocol version"),
    ([header(type="dance")], "unknown message type"),
    ([header(type="frame")], "may not travel"),
    ([header(type="switch_model")], "lacks field 'name'"),
    ([header(type="switch_model", name=3)], "field 'name' must be text"),
    ([header(type="select", tap="3", channel=[0.5, 0], pitch=[0.5, 1], time=[0.5, 1])], "field 'tap'"),
    ([header(type="select", tap=True, channel=[0.5, 0], pitch=[0.5, 1], time=[0.5, 1])], "field 'tap'"),
    ([header(type="select", tap=3, channel=[0.5], pitch=[0.5, 1], time=[0.5, 1])], "field 'channel'"),
    ([header(type="pause", deck="A", extra=1)], "unexpected field 'extra'"),
    ([header(type="params", values={f"p{i}": "x" * 200 for i in range(100)})], "exceeds its limit of 16384"),
    ([header(type="pause", deck="A"), b"x"], "needs 0 arrays"),
    ([header(type="set_start", deck="A", arrays=[["clip", "float16", [4]]]), b"\0" * 8], "must be float32"),
    ([header(type="set_start", deck="A", arrays=[["clip", "float64", [4]]]), b"\0" * 32], "not allowed"),
    ([header(type="set_start", deck="A", arrays=[["clip", "float32", [5]]]), b"\0" * 16], "needs 20 bytes"),
    ([header(type="set_start", deck="A", arrays=[["clip", "float32", [-4]]]), b""], "non-negative"),
    ([header(type="set_start", deck="A", arrays=[["clip", "float32", [0]]]), b""], "empty"),
    ([header(type="pause", deck="A")] * 9, "parts"),
    ([header(type="set_start", deck="A", arrays=[["clip", "float32", [P.FRAME_LIMIT // 4]]]), b"\0" * P.FRAME_LIMIT],
     "exceeds"),
    ([b"\x80" * (P.HEADER_LIMIT + 1)], "header of"),
    ([header(type="pause")], "lacks field 'deck'"),
    ([header(type="resume", deck="C")], "field 'deck' must name a deck: A or B"),
    ([header(type="select", tap=3, channel=[0.5, 0], pitch=[0.5, 1], time=[0.5, 1], deck="a")], "field 'deck'"),
    ([header(type="switch_model", name="micro", deck=1)], "field 'deck'"),
    ([header(type="params", values={}, deck=["A"])], "field 'deck'"),
])
def test_bad_messages_are_refused_with_a_reason(parts, reason):
    with pytest.raises(P.ProtocolError, match=reason):
        P.decode(parts, P.FROM_CLIENT)


def test_another_protocol_version_is_named_and_refusals_cross_versions():
    future = msgpack.packb({"v": P.PROTOCOL_VERSION + 1, "type": "hello", "model": "x"})
    with pytest.raises(P.VersionMismatch) as caught:
        P.decode([future], P.FROM_CLIENT)
    assert caught.value.theirs == P.PROTOCOL_VERSION + 1 and str(P.PROTOCOL_VERSION) in str(caught.value)
    refusal = msgpack.packb({"v": 99, "type": "refusal", "reason": "server speaks 99"})
    assert P.decode([refusal], P.FROM_SERVER) == P.Refusal("server speaks 99", 99)


# -- a server and a client -----------------------------------------------------------------------

def test_remote_engine_dreams_on_the_server(server, micro):
    got = []
    with client(micro, server.endpoint, on_frame=got.append) as remote:
        assert wait_for(lambda: len(got) >= 3), remote.status
        assert remote.connected and remote.error is None and "connected to" in remote.status
        frame = remote.latest()
        assert isinstance(frame, DreamFrame) and frame is got[-1]
        assert [f.serial for f in got[:3]] == [1, 2, 3]
        assert frame.activations.shape == (micro[0].graph_nodes, FRAMES_PER_LOOP)
        assert frame.activations.dtype == np.float16 and frame.clip.shape == (4 * SR,)
        assert frame.model_name == str(micro[0].folder) and frame.selection.sum() > 0
        # parameters (only on change) and the selection reach every worker
        engine = server.engines[0]
        assert remote.update(learning_rate=-1.5, time_jitter=0.3)
        assert not remote.update(learning_rate=99.0) and remote.rejected == 1
        remote.select(Region(5, (0.2, 0.1)), keep=True)
        assert wait_for(lambda: engine.params["learning_rate"] == -1.5 and engine.params["time_jitter"] == 0.3)
        assert wait_for(lambda: engine.dreamer.selection.regions == (Region(3, (0.0, 0.5)), Region(5, (0.2, 0.1))))
        with pytest.raises(ImmersionsError, match="no tap 99"):
            remote.select(Region(99))  # checked here, as the local engine does
        remote.pause()
        assert remote.paused and wait_for(lambda: engine.paused)
        remote.resume()
        assert wait_for(lambda: not engine.paused)
        count = len(got)
        assert wait_for(lambda: len(got) > count)  # dreaming again
    assert wait_for(lambda: server.engines[0].paused)  # the client said bye: the server rests
    assert server.rejected == 0


def test_two_workers_both_contribute_frames(micro_model_dir, micro):
    server = serve(micro_model_dir, workers=2)
    try:
        with client(micro, server.endpoint) as remote:
            assert wait_for(lambda: len(remote.worker_frames) == 2 and min(remote.worker_frames.values()) >= 2,
                            60), remote.worker_frames
            assert remote.server.workers == 2
        seeds = {e.dreamer.generator.initial_seed() for e in server.engines}
        assert len(seeds) == 2  # each worker jitters with its own seed
    finally:
        server.stop()


def test_a_second_performer_takes_over(server, micro):
    with client(micro, server.endpoint) as first:
        assert wait_for(lambda: first.frames_received >= 1)
        with client(micro, server.endpoint) as second:
            assert wait_for(lambda: second.frames_received >= 1)
            assert wait_for(lambda: first.state == "stopped")
            assert "took over" in first.error and server.takeovers == 1
            received = first.frames_received
            count = second.frames_received
            assert wait_for(lambda: second.frames_received >= count + 2)
            assert first.frames_received == received  # the displaced one gets nothing more


def test_an_unknown_model_is_named_to_the_client(server, micro, tmp_path):
    other = tmp_path / "other-model"
    shutil.copytree(micro[0].folder, other)
    model = load_model(other)
    remote = RemoteEngine(model, None, np.zeros(4 * SR, np.float32), address=server.endpoint)
    with remote:
        assert wait_for(lambda: remote.error is not None)
        assert "no model 'other-model'" in remote.error and remote.latest() is None
    assert server.rejected == 1


def test_curve_keys_refuse_strangers_and_the_server_runs_on(micro_model_dir, micro, tmp_path):
    made = generate_keys(tmp_path / "keys", "laptop")
    assert stat.S_IMODE(os.stat(made["server_secret"]).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(made["client_secret"]).st_mode) == 0o600
    assert (tmp_path / "keys" / "authorized" / "laptop.key").is_file()
    stranger = generate_keys(tmp_path / "elsewhere", "stranger")["client_folder"]  # signed by no one we know
    shutil.copyfile(tmp_path / "keys" / "server.key", stranger / "server.key")  # knows the server, is not known
    server = serve(micro_model_dir, keys=tmp_path / "keys")
    try:
        with client(micro, server.endpoint, keys=stranger, link_timeout=1.0) as refused:
            assert wait_for(lambda: refused.error is not None, 10)
            assert "refused this laptop's key" in refused.error and not refused.connected
            assert refused.latest() is None and server.refused_handshakes >= 1
        # the whole keys folder works as the client's when it holds one client
        with client(micro, server.endpoint, keys=tmp_path / "keys") as good:
            assert wait_for(lambda: good.frames_received >= 2), good.status
        # a laptop authorized while the server runs is let in without a restart
        late = generate_keys(tmp_path / "keys", "late")["client_folder"]
        with client(micro, server.endpoint, keys=late) as newcomer:
            assert wait_for(lambda: newcomer.frames_received >= 1, 15), newcomer.status
        assert server._thread.is_alive()
    finally:
        server.stop()
    with pytest.raises(ImmersionsError, match="needs keys"):
        client(micro, "tcp://192.0.2.1:5555")


@contextlib.contextmanager
def bare_dealer(endpoint: str):
    """A bare DEALER socket on the server: messages as a broken or foreign client sends them."""
    ctx = zmq.Context()
    raw = ctx.socket(zmq.DEALER)
    raw.setsockopt(zmq.LINGER, 0)
    raw.connect(endpoint)
    try:
        yield raw
    finally:
        raw.close(0)
        ctx.term()


def test_malformed_oversized_and_foreign_messages_are_rejected(server, micro):
    with bare_dealer(server.endpoint) as raw:
        def exchange(*parts):
            raw.send_multipart(list(parts))
            assert raw.poll(15000), "the server did not answer"  # generous: CI machines are busy
            return P.decode(raw.recv_multipart(), P.FROM_SERVER)

        assert "not valid msgpack" in exchange(b"\xc1garbage").message
        oversized = header(type="params", values={f"p{i}": "x" * 200 for i in range(100)})
        assert "exceeds its limit" in exchange(oversized).message
        bad_dtype = exchange(header(type="set_start", deck="A", arrays=[["clip", "float64", [4]]]), b"\0" * 32)
        assert "not allowed" in bad_dtype.message
        assert exchange(header(type="pause", deck="A")).code == "not_ready"  # no hello first
        refusal = exchange(msgpack.packb({"v": 7, "type": "hello", "model": "x", "client": "old", "session": "s"}))
        assert isinstance(refusal, P.Refusal)
        assert "version 7" in refusal.reason and f"speaks {P.PROTOCOL_VERSION}" in refusal.reason
        assert server.rejected == 5
        raw.send(b"\0" * (P.SOCKET_MAX_PART + 1))  # over ZMQ_MAXMSGSIZE: zmq drops that peer
        time.sleep(0.2)
    with client(micro, server.endpoint) as good:
        assert wait_for(lambda: good.frames_received >= 2), good.status
    assert server._thread.is_alive()


def test_every_bad_message_in_a_burst_is_answered(server):
    """ZeroMQ tells a ROUTER that the wire took its messages only in batches: with a queue just
    deep enough for the frames in flight, replies sent in a burst were dropped without a word
    (a refusal never reached an old client; CI saw it). A burst of bad messages, sent before
    reading any answer, gets every answer."""
    burst = 24
    with bare_dealer(server.endpoint) as raw:
        for _ in range(burst):
            raw.send(header(type="pause", deck="A"))
        answers = []
        while len(answers) < burst and raw.poll(15000):
            answers.append(P.decode(raw.recv_multipart(), P.FROM_SERVER))
    assert len(answers) == burst, f"{burst - len(answers)} of {burst} answers were lost"
    assert all(a.code == "not_ready" for a in answers)
    assert server.rejected == burst and server.unsent == 0


@pytest.mark.slow
def test_the_client_rides_out_a_killed_server(micro_model_dir, micro):
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    args = ["--bind", address, "--insecure", "--model", str(micro_model_dir), "--gpus", "cpu"]
    process = ServerProcess(args)
    try:
        process.wait_ready(60)
        with client(micro, address) as remote:
            assert wait_for(lambda: remote.frames_received >= 2, 60), remote.status
            process.kill()
            assert wait_for(lambda: not remote.connected, 5)
            last = remote.latest()
            time.sleep(1.5)
            assert remote.latest() is last  # the music loops the last clip
            assert "lost server" in remote.status and address in remote.status and remote.error
            received = remote.frames_received
            process = ServerProcess(args)
            process.wait_ready(60)
            assert wait_for(lambda: remote.frames_received > received, 10), remote.status
            assert remote.connected and remote.error is None and remote.latest().serial > last.serial
            assert remote.welcomes == 2
    finally:
        process.terminate()


class FlakyLink:
    """A TCP forwarder on 127.0.0.1 that can stop carrying bytes, as a pulled cable does:
    the connections stay open and nothing arrives, so only heartbeats can tell."""

    def __init__(self, target: str):
        self.target = int(target.rsplit(":", 1)[1])
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)
        self.address = f"tcp://127.0.0.1:{self.listener.getsockname()[1]}"
        self.carrying = threading.Event()
        self.carrying.set()
        self.closed = False
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closed:
            try:
                near, _ = self.listener.accept()
            except OSError:
                continue
            far = socket.create_connection(("127.0.0.1", self.target))
            self.sockets += [near, far]
            for a, b in ((near, far), (far, near)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src, dst):
        try:
            while not self.closed:
                if not self.carrying.is_set() or not select.select([src], [], [], 0.05)[0]:
                    time.sleep(0.01)
                    continue
                data = src.recv(1 << 16)
                if not data:
                    break
                dst.sendall(data)
        except (OSError, ValueError):  # the other direction closed the pair
            pass
        finally:
            for sock in (src, dst):
                sock.close()

    def close(self):
        self.closed = True
        self.listener.close()
        for sock in self.sockets:
            sock.close()


@pytest.mark.slow
def test_a_dead_link_is_noticed_and_the_session_resumes_where_it_was(micro_model_dir, micro):
    server = serve(micro_model_dir, client_timeout_s=1.0)
    link = FlakyLink(server.endpoint)
    try:
        with client(micro, link.address, link_timeout=1.0) as remote:
            b = remote.another_deck(micro[0], micro[1], start_clip("groove", 4 * SR, SR, 1), REGISTRY.defaults(), 1,
                                    None, "B")
            b.select(Region(5, (0.6, 0.2)))
            assert wait_for(lambda: remote.frames_of_deck >= 2 and b.frames_of_deck >= 1, 60), remote.status
            engine, deck_b = server.engines[0], server.deck_engines("B")[0]
            b.pause()  # deck B on air holds its loop (as dream_decks = off_air has it): A dreams
            assert wait_for(lambda: deck_b.paused, 5)
            welcomes = remote.welcomes  # (a 1-s timeout on a busy machine may already have reconnected once)
            starts = [server.session.decks[d].start for d in "AB"]
            link.carrying.clear()  # the cable is pulled: no close, no reset, nothing
            assert wait_for(lambda: not remote.connected, 5)
            assert "lost server" in remote.status and "nothing heard" in remote.status
            assert wait_for(lambda: engine.paused, 5)  # the server rests while nobody listens
            last = remote.latest()
            link.carrying.set()
            assert wait_for(lambda: remote.connected and remote.latest() is not last, 20), remote.status
            assert remote.welcomes == welcomes + 1 and remote.server.resumed and remote.server.decks == ["A", "B"]
            # the same loops go on: A dreams, B still holds
            assert server.engines[0] is engine and not engine.paused
            assert server.deck_engines("B")[0] is deck_b and deck_b.paused
            assert [server.session.decks[d].start for d in "AB"] == starts  # the start clips were not sent again
            assert server.session.id == remote.session
    finally:
        link.close()
        server.stop()


def test_fallback_dreams_locally_until_the_server_is_back(micro_model_dir, micro):
    address = f"tcp://127.0.0.1:{free_port()}"
    got = []
    with client(micro, address, fallback=True, fallback_after=0.5, link_timeout=0.5, on_frame=got.append) as remote:
        assert wait_for(lambda: len(got) >= 2, 30), remote.status
        assert not remote.connected and "dreaming locally" in remote.status
        assert not isinstance(got[-1], P.RemoteFrame)  # made here
        server = DreamServer(address, [str(micro_model_dir)], ["cpu"], insecure=True)
        server.start()
        try:
            assert wait_for(lambda: isinstance(remote.latest(), P.RemoteFrame), 30), remote.status
            assert remote.connected and not remote.dreaming_locally
            serials = [f.serial for f in got]
            assert serials == sorted(serials) and len(set(serials)) == len(serials)  # one count across both
        finally:
            remote.stop()
            server.stop()


def test_with_a_fallback_the_server_away_is_no_error_and_closing_does_not_say_it_is_back(micro, caplog):
    address = f"tcp://127.0.0.1:{free_port()}"  # nobody serves here
    got = []
    with client(micro, address, fallback=True, fallback_after=0.5, link_timeout=0.5, on_frame=got.append) as remote:
        assert wait_for(lambda: len(got) >= 1, 30), remote.status
        assert "unreachable" in remote.status and "dreaming locally" in remote.status
        assert remote.error is None  # clips come all the same: whoever waits for one keeps waiting
    said = [r.getMessage() for r in caplog.records]
    assert "the local engine stopped" in said
    assert not any("is back:" in line for line in said)  # it never came back; the performance ended
    with client(micro, address, link_timeout=0.5) as remote:  # without a fallback it is an error
        assert wait_for(lambda: remote.error is not None, 10) and "unreachable" in remote.error


@pytest.mark.slow
def test_headless_perform_falls_back_when_the_server_is_down(micro_model_dir, tmp_path):
    """`perform --headless --server ... --fallback-local` with no server: the wait for the first
    clip allows for the fallback (10 s away, then the local engine's first clip); without
    --fallback-local the same is one line and exit status 2."""
    import json

    from helpers import run_cli

    folder = tmp_path / "micro"
    shutil.copytree(micro_model_dir, folder)  # its map gets cached there
    server = f"tcp://127.0.0.1:{free_port()}"
    base = ["--quiet", "perform", "--headless", "--seconds", "2", "--model", str(folder), "--device", "cpu",
            "--no-midi", "--fps", "5", "--size", "160x90", "--server", server]
    done = run_cli(*base, "--fallback-local", "--json")
    assert done.returncode == 0, done.stderr[-2000:]
    doc = json.loads(done.stdout)
    assert doc["clips_heard"] >= 1 and doc["dream_steps"] > 0
    assert "dreaming locally" in done.stderr and "is back:" not in done.stderr
    done = run_cli(*base)
    assert done.returncode == 2, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("immersions: error")]
    assert len(errors) == 1 and "no dreamed clip" in errors[0] and "unreachable" in errors[0]
    assert "smaller model" not in errors[0]  # the server is the trouble, not the model


# -- command line and the performance -------------------------------------------------------------

def test_keys_and_serve_commands(tmp_path, capsys):
    keys = tmp_path / "keys"
    assert remote_main(["keys", "generate", str(keys), "--name", "laptop"]) == 0
    assert "clients/laptop" in capsys.readouterr().out
    assert remote_main(["keys", "generate", str(keys), "--name", "laptop"]) == 2  # never overwritten
    assert "exist" in capsys.readouterr().err
    assert remote_main(["keys", "generate", str(keys), "--name", "stage-left"]) == 0
    assert sorted(p.name for p in (keys / "authorized").iterdir()) == ["laptop.key", "stage-left.key"]
    with pytest.raises(ImmersionsError, match="2 clients"):
        load_client_keys(keys)
    assert load_client_keys(keys / "clients" / "laptop").server_public == load_client_keys(
        keys / "clients" / "stage-left").server_public
    assert remote_main(["serve", "--bind", "tcp://0.0.0.0:5555"]) == 2
    assert "needs keys" in capsys.readouterr().err
    assert remote_main(["serve", "--bind", "tcp://0.0.0.0:5555", "--insecure"]) == 2
    assert "loopback" in capsys.readouterr().err
    make = remote_engine_factory("tcp://127.0.0.1:5555", str(keys / "clients" / "laptop"), False)
    assert isinstance(make, functools.partial) and make.keywords["address"] == "tcp://127.0.0.1:5555"
    with pytest.raises(ImmersionsError, match="needs --keys"):
        remote_engine_factory("tcp://192.0.2.1:5555", None, False)


@pytest.fixture
def remote_performance(micro_model_dir, tmp_path):
    """A Performance (offline clock, offscreen GL) dreaming on a server on 127.0.0.1: (perf, server)."""
    from immersions.performance.performance import OfflineClock, Performance
    from immersions.visual.gl import offscreen_context

    folder = tmp_path / "micro"
    shutil.copytree(micro_model_dir, folder)  # its map gets cached there
    server = serve(folder)
    ctx = offscreen_context()
    perf = Performance(ctx, (160, 90), OfflineClock(), model=str(folder), device="cpu",
                       engine_factory=remote_engine_factory(server.endpoint, None, False))
    try:
        yield perf, server
    finally:
        perf.close()
        ctx.release()
        server.stop()


def test_a_performance_dreams_remotely(remote_performance):
    perf, server = remote_performance
    assert isinstance(perf.engine, RemoteEngine)
    perf.start()
    assert wait_for(lambda: perf.engine.latest() is not None, 60), perf.engine.status
    assert perf.set("learning_rate", -1.5) and perf.set("channel_span", 0.5)
    assert wait_for(lambda: server.engines and server.engines[0].params["learning_rate"] == -1.5)
    assert wait_for(lambda: server.engines[0].dreamer.selection.regions[-1].channel[1] == 0.5)
    target = perf.ctx.simple_framebuffer(perf.size)
    for _ in range(8):
        perf.clock.advance(0.25)
        perf.frame(0.25, target=target)
    assert perf.heard.serial >= 1 and perf.shown_frame() is perf.heard.frame
    assert perf.renderer.read_image().max() > 40  # the map glows with the remote clip
    target.release()


def test_weighted_regions_and_quieted_neurons_cross_the_wire():
    quiet = Region(4, (0.3, 0.2), weight=-1.5)
    for message in (P.select_message(quiet, keep=True), P.edit_message(quiet)):
        received = P.decode(wire(message), P.FROM_CLIENT)
        assert received.region == quiet and received.region.quiet
    # an old-style message without a weight excites; a weight of 0 is refused with a reason
    assert P.decode(wire(P.Edit(4, (0.3, 0.2), (0.5, 1.0), (0.5, 1.0))), P.FROM_CLIENT).region.weight == 1.0
    bad = P.decode(wire(P.Edit(4, (0.3, 0.2), (0.5, 1.0), (0.5, 1.0), 0.0)), P.FROM_CLIENT)
    with pytest.raises(P.ProtocolError, match="region weight"):
        bad.region
    frame = a_frame()
    quieted = frame.selection & (np.arange(len(frame.selection)) % 2 == 0)
    frame = DreamFrame(*[getattr(frame, f) for f in ("serial", "clip", "sample_rate", "activations", "selection",
                                                    "objective", "step", "steps_per_second", "nan_resets",
                                                    "scalogram", "model_name")], quieted=quieted)
    out = P.decode(wire(P.frame_message(frame)), P.FROM_SERVER).to_dream_frame(1)
    assert np.array_equal(out.quieted, quieted) and np.array_equal(out.selection, frame.selection)


def test_a_quiet_region_reaches_the_server_s_dreamer(server, micro):
    with client(micro, server.endpoint) as remote:
        assert wait_for(lambda: remote.frames_received >= 1), remote.status
        remote.select(Region(5, (0.2, 0.1), weight=-1.0), keep=True)
        engine = server.engines[0]
        assert wait_for(lambda: len(engine.dreamer.selection.regions) == 2)
        assert engine.dreamer.selection.regions[-1].weight == -1.0
        assert wait_for(lambda: remote.latest() is not None and remote.latest().quieted.any())


# -- two decks on one link --------------------------------------------------------------------------

def test_a_dream_server_keeps_a_dream_per_deck_and_tags_its_frames(server, micro):
    """Deck B is a second deck on the same link (not a second performer, which would take the
    server over): its own selection and start clip dream on the server, every frame comes back
    tagged with its deck and reaches that deck only; pause and resume name the deck."""
    model, stats = micro
    got = {"A": [], "B": []}
    with client(micro, server.endpoint, on_frame=got["A"].append) as remote:
        b = remote.another_deck(model, stats, start_clip("groove", 4 * SR, SR, 1), REGISTRY.defaults(), 1,
                                got["B"].append, "B")
        b.select(Region(5, (0.6, 0.2)))
        b.start()  # the link is already running: nothing more starts
        assert wait_for(lambda: len(got["A"]) >= 2 and len(got["B"]) >= 2, 60), remote.status
        assert {f.deck for f in got["A"]} == {"A"} and {f.deck for f in got["B"]} == {"B"}
        assert b.latest() is got["B"][-1] and remote.latest() is got["A"][-1]
        assert b.status == remote.status and b.connected and b.error is None
        # each deck dreams its own selection on the server, with its own engine on the one worker
        (ea,), (eb,) = server.deck_engines("A"), server.deck_engines("B")
        assert ea is not eb and ea.turns is eb.turns  # one worker: one dream step at a time
        assert ea.dreamer.selection.regions == (Region(3, (0.0, 0.5)),)
        assert wait_for(lambda: eb.dreamer.selection.regions == (Region(5, (0.6, 0.2)),))
        assert not np.array_equal(got["A"][-1].selection, got["B"][-1].selection)
        assert wait_for(lambda: ea.dreamer.steps > 1 and eb.dreamer.steps > 1)  # both dream, in turn
        # parameters and edits of one deck stay on that deck
        assert b.update(learning_rate=-1.5)
        b.edit(Region(5, (0.6, 0.1)))
        assert wait_for(lambda: eb.params["learning_rate"] == -1.5 and eb.dreamer.selection.regions[-1].channel[1] == 0.1)
        assert ea.params["learning_rate"] == -2.0 and ea.dreamer.selection.regions == (Region(3, (0.0, 0.5)),)
        # deck A goes on air and holds: only B dreams on the server
        remote.pause()
        assert wait_for(lambda: ea.paused) and not eb.paused
        steps = eb.dreamer.steps
        assert wait_for(lambda: eb.dreamer.steps > steps + 1, 60)  # A's step under way (and its frame) is done
        held, frames, steps, count = ea.dreamer.steps, len(got["A"]), eb.dreamer.steps, len(got["B"])
        assert wait_for(lambda: eb.dreamer.steps > steps + 1 and len(got["B"]) > count + 1, 60)
        assert ea.dreamer.steps == held and len(got["A"]) == frames  # A holds its loop
        b.pause()
        remote.resume()
        assert wait_for(lambda: eb.paused and not ea.paused)
        assert server.deck_frames["A"] >= 2 and server.deck_frames["B"] >= 2 and server.rejected == 0
    assert wait_for(lambda: ea.paused and eb.paused)  # the client said bye: both rest


def test_a_frame_names_its_deck_and_a_bad_deck_is_refused():
    out = P.decode(wire(P.frame_message(a_frame(), deck="B")), P.FROM_SERVER)
    assert out.deck == "B" and out.to_dream_frame(1).deck == "B"
    parts = wire(P.frame_message(a_frame()))
    head = msgpack.unpackb(parts[0])
    for bad in ("C", None, 0):
        head["deck"] = bad
        with pytest.raises(P.ProtocolError, match="field 'deck' must name a deck"):
            P.decode([msgpack.packb(head), *parts[1:]], P.FROM_SERVER)
    del head["deck"]
    with pytest.raises(P.ProtocolError, match="lacks field 'deck'"):
        P.decode([msgpack.packb(head), *parts[1:]], P.FROM_SERVER)


def test_the_server_refuses_a_bad_deck_in_one_line_and_runs_on(server, micro):
    with bare_dealer(server.endpoint) as raw:
        raw.send_multipart(P.encode(P.Hello(micro[0].folder.name, "raw", "s1")))
        assert raw.poll(15000) and isinstance(P.decode(raw.recv_multipart(), P.FROM_SERVER), P.Welcome)
        raw.send(header(type="pause", deck="C"))
        while raw.poll(15000):
            answer = P.decode(raw.recv_multipart(), P.FROM_SERVER)
            if not isinstance(answer, P.Heartbeat):
                break
        assert isinstance(answer, P.Error) and answer.code == "rejected"
        assert "field 'deck' must name a deck: A or B" in answer.message and "\n" not in answer.message
        assert server.rejected == 1 and set(server.session.decks) == {"A"}  # nothing changed
    assert server._thread.is_alive()


def test_a_performance_plays_two_decks_dreamed_remotely(remote_performance):
    """perform --server with two decks: deck B is made on the same link, the deck off air
    dreams on the server while the one on air holds, the fader moves which one that is, and
    each deck of the player gets its own deck's clips. Losing the server keeps both loops."""
    perf, server = remote_performance

    def play(until, what, timeout=60.0):
        deadline = time.monotonic() + timeout
        while not until():
            assert time.monotonic() < deadline, f"{what}: {perf.engine.status}"
            perf.clock.advance(0.1)
            perf.frame(0.1)
            time.sleep(0.02)

    perf.start()
    play(lambda: perf.engine.latest() is not None, "deck A's first clip")
    assert perf.set("deck", "B") and perf.edited == "B" and set(perf.decks) == {"A", "B"}
    a, b = perf.decks["A"], perf.decks["B"]
    assert isinstance(b.engine, RemoteDeck) and b.engine._link is a.engine  # one link, one session
    assert perf.set("layer", 0.0)  # deck B's own selection
    play(lambda: server.deck_engines("B") and server.deck_engines("B")[0].dreamer.selection.regions
         and server.deck_engines("B")[0].dreamer.selection.regions[-1].tap == 0, "deck B's selection on the server")
    (ea,), (eb,) = server.deck_engines("A"), server.deck_engines("B")
    assert ea.dreamer.selection.regions[-1].tap != 0 and server.takeovers == 0
    # the fader is on A: A holds its loop on the server too, B (off air) dreams there
    play(lambda: ea.paused and not eb.paused, "deck A holds, deck B dreams")
    play(lambda: perf.clock.position(deck=1).frame is not None, "deck B plays (in the cue)")
    heard_b = perf.clock.position(deck=1).frame
    assert isinstance(heard_b, P.RemoteFrame) and heard_b.deck == "B" and heard_b.selection.sum() > 0
    assert perf.clock.position(deck=0).frame.deck == "A"
    # fade B in: it goes on air and holds; A, off air now, dreams on the server
    perf.controls.act("fade_bars", 1, "keys")
    play(lambda: perf.clock.fader == 1.0, "the fade ends", 30)
    play(lambda: eb.paused and not ea.paused, "deck B holds, deck A dreams")
    lines = perf.deck_lines()
    assert lines[0].startswith("deck A (cue): dreams") and lines[1].startswith("deck B (on air, edited): holds")
    # the server goes away: both decks' loops play on, each its last clip
    server.stop()
    play(lambda: not perf.engine.connected, "the link notices", 15)
    last = [a.engine.latest(), b.engine.latest()]
    played = len(perf.clock.audio())
    for _ in range(60):  # more than a loop: each deck has switched to its last clip
        perf.clock.advance(0.1)
        perf.frame(0.1)
    assert [a.engine.latest(), b.engine.latest()] == last  # nothing new came
    assert [perf.clock.position(deck=i).frame for i in (0, 1)] == last
    assert np.abs(perf.clock.audio()[played:]).max() > 0.01  # the music goes on
    assert "lost server" in perf.engine.status and a.engine.status == b.engine.status


def test_with_a_fallback_both_decks_dream_locally_until_the_server_is_back(micro_model_dir, micro):
    model, stats = micro
    address = f"tcp://127.0.0.1:{free_port()}"
    got = {"A": [], "B": []}
    with client(micro, address, fallback=True, fallback_after=0.5, link_timeout=0.5, on_frame=got["A"].append) as remote:
        b = remote.another_deck(model, stats, start_clip("groove", 4 * SR, SR, 1), REGISTRY.defaults(), 1,
                                got["B"].append, "B")
        b.select(Region(5, (0.6, 0.2)))
        assert wait_for(lambda: len(got["A"]) >= 1 and len(got["B"]) >= 1, 60), remote.status
        assert remote.dreaming_locally and not isinstance(got["B"][-1], P.RemoteFrame)  # made here
        server = DreamServer(address, [str(micro_model_dir)], ["cpu"], insecure=True)
        server.start()
        try:
            assert wait_for(lambda: isinstance(remote.latest(), P.RemoteFrame)
                            and isinstance(b.latest(), P.RemoteFrame), 60), remote.status
            assert remote.latest().deck == "A" and b.latest().deck == "B" and not remote.dreaming_locally
            assert server.deck_engines("B")[0].dreamer.selection.regions == (Region(5, (0.6, 0.2)),)
            serials = [f.serial for f in got["A"] + got["B"]]
            assert len(set(serials)) == len(serials)  # one count across both decks and both places
        finally:
            b.stop()
            remote.stop()
            server.stop()


def test_engines_that_share_turns_step_one_at_a_time_and_alternate():
    from immersions.dream.engine import Turns

    turns, log, inside, together = Turns(), [], [], []

    def dream(name, steps=20):
        for i in range(steps):
            with turns:
                inside.append(name)
                if len(inside) > 1:
                    together.append(tuple(inside))
                log.append(name)
                # hold the turn until the other one asks for it (or has finished): then it goes next
                wait_for(lambda: turns.waiting or finished[1 - names.index(name)], 10)
                inside.remove(name)
        finished[names.index(name)] = True

    names, finished = ["A", "B"], [False, False]
    threads = [threading.Thread(target=dream, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not together  # one at a time
    assert len(log) == 40 and all(x != y for x, y in zip(log, log[1:]))  # A B A B ...


def test_ctrl_c_stops_the_server_even_where_its_parent_ignored_it(micro_model_dir):
    """A script's background job starts with SIGINT ignored, and Python then never raises
    KeyboardInterrupt: `immersions serve` handles Ctrl-C itself, finishes and says what it sent."""
    import signal
    import subprocess
    import sys

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "immersions", "serve", "--bind", f"tcp://127.0.0.1:{port}",
                             "--insecure", "--model", str(micro_model_dir)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    lines = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        assert wait_for(lambda: any("server ready" in line for line in lines), timeout=120), "".join(lines)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(30)
    assert any("stopped (0 frames sent" in line for line in lines), "".join(lines)
