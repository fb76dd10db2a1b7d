"""Adding a parameter is one line: a copy of the package with one visual and one dream
parameter declared in the registry's table (nothing else changed) shows them in the overlay,
over OSC, in presets, and at their consumers (the renderer's visuals, the dream engine)."""

import json
import shutil
import subprocess
import sys

import pytest

from helpers import REPO

VISUAL_LINE = '    Parameter("glow_hue", VISUALS, 0.3, description="a new visual parameter", consumer=RENDERER),\n'
DREAM_LINE = '    Parameter("test_drive", REGULARIZERS, 0.0, description="a new dream parameter"),\n'

PROBE = r'''
import json, socket, sys, time
from pythonosc.udp_client import SimpleUDPClient
from immersions.control.osc import OscServer
from immersions.control.presets import load_preset, write_preset
from immersions.registry import REGISTRY
from immersions.performance.gui import overlay_groups
from immersions.performance.performance import OfflineClock, Performance
from immersions.visual.gl import offscreen_context
from immersions.visual.renderer import visuals_from

model, folder = sys.argv[1], sys.argv[2]
out = {"overlay": {g: [p.name for p in ps] for g, ps in overlay_groups().items()}}
ctx = offscreen_context()
perf = Performance(ctx, (160, 90), OfflineClock(), model=model, device="cpu")
with OscServer(perf.controls, 0) as server:
    client = SimpleUDPClient(*server.address)
    client.send_message("/immersions/glow_hue", 0.7)
    client.send_message("/immersions/test_drive", 0.4)
    deadline = time.monotonic() + 10
    while server.received < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    perf.controls.apply()
out["params"] = {n: perf.params[n] for n in ("glow_hue", "test_drive")}
out["visuals_glow_hue"] = visuals_from(perf.params).glow_hue
perf.frame(0.05)  # the renderer draws with the new visuals
deadline = time.monotonic() + 10
while perf.engine.params["test_drive"] != perf.params["test_drive"] and time.monotonic() < deadline:
    time.sleep(0.01)
out["engine_test_drive"] = perf.engine.params["test_drive"]
path = write_preset(folder + "/p.toml", "p", {"glow_hue": 0.9, "test_drive": 0.2})
out["preset"] = load_preset(path).values
perf.close()
ctx.release()
print(json.dumps(out))
'''


@pytest.fixture(scope="module")
def package_with_two_new_lines(tmp_path_factory):
    root = tmp_path_factory.mktemp("oneline")
    shutil.copytree(REPO / "app" / "immersions", root / "immersions", ignore=shutil.ignore_patterns("__pycache__"))
    registry = root / "immersions" / "registry.py"
    lines = registry.read_text().splitlines(keepends=True)
    dream_end = lines.index("DREAM_PARAMETERS = (\n") + 1
    lines.insert(dream_end, DREAM_LINE)
    perform_end = lines.index("PERFORM_PARAMETERS = (\n") + 1
    lines.insert(perform_end, VISUAL_LINE)
    registry.write_text("".join(lines))
    return root


def test_a_visual_and_a_dream_parameter_each_need_one_line(package_with_two_new_lines, micro_model_dir, tmp_path):
    root = package_with_two_new_lines
    # the copy differs from the package by exactly the two lines
    ours = (REPO / "app" / "immersions" / "registry.py").read_text().splitlines()
    theirs = (root / "immersions" / "registry.py").read_text().splitlines()
    assert sorted(set(theirs) - set(ours)) == sorted([DREAM_LINE.rstrip("\n"), VISUAL_LINE.rstrip("\n")])
    model = tmp_path / "micro"
    shutil.copytree(micro_model_dir, model)
    env = {"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
           **{f"IMMERSIONS_{name.upper()}": str(REPO / name) for name in ("shaders", "assets", "models")}}
    done = subprocess.run([sys.executable, "-c", PROBE, str(model), str(tmp_path)], capture_output=True, text=True,
                          timeout=300, env=env, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert "glow_hue" in out["overlay"]["Visuals"] and "test_drive" in out["overlay"]["Regularizers"]
    # over OSC (float32 on the wire), through the control hub
    assert out["params"] == {"glow_hue": pytest.approx(0.7), "test_drive": pytest.approx(0.4)}
    assert out["visuals_glow_hue"] == out["params"]["glow_hue"]  # the renderer's visuals carry it
    assert out["engine_test_drive"] == out["params"]["test_drive"]  # the dream engine's snapshot carries it
    assert out["preset"] == {"glow_hue": 0.9, "test_drive": 0.2}
