#!/usr/bin/env bash
# The full-band ear trained on a lent GPU in under 10 minutes, from what travels: the compact
# music (.music/, at most 40 MB of Opus: scripts/gpu_train.py) and the wheels the lent image
# lacks (.whl/: gpu-check's, plus soundfile, which reads the Opus where PyAV is missing). The
# procedural corpus is generated there. Writes train.json (items/s, both probes, the device)
# and model/ (weights, config, statistics, log, plot) to $OUT: six files.
#
#   bash scripts/gpu-train.sh --prepare [--music DIR --probe DIR]   here, once: .music/ and .whl/
#   bash scripts/gpu-train.sh                                        there; a lease:
#       run: bash scripts/gpu-train.sh   carry: [".music", ".whl"]   timeout_s: 600
#
# Environment:
#   OUT               where train.json and model/ go (default: gpu-train/ in the checkout)
#   GPU_TRAIN_SCALE   gpu or tiny (default: gpu when torch sees CUDA, else tiny: a few
#                     seconds of training and small probes on the CPU, for CI)
#   GPU_TRAIN_MUSIC   the compact music (default: .music)
#   GPU_TRAIN_PYTHON  the interpreter (default: .venv/bin/python, else a python3 with torch)
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

if [ "${1:-}" = "--prepare" ]; then
  shift
  [ -x .venv/bin/python ] || { echo "gpu-train: run scripts/setup.sh first (prepare decodes with PyAV)" >&2; exit 2; }
  bash scripts/gpu-check.sh --prepare || exit 2
  version=$(.venv/bin/python -c 'import importlib.metadata as m; print(m.version("soundfile"))' 2>/dev/null) \
    || { echo "gpu-train: soundfile is not installed here; bash scripts/setup.sh" >&2; exit 2; }
  .venv/bin/python -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
    --python-version "${GPU_CHECK_WHEEL_PYTHON:-3.12}" --implementation cp --platform manylinux_2_28_x86_64 \
    --platform manylinux_2_17_x86_64 -d .whl "soundfile==$version" || exit 2
  PYTHONPATH="$ROOT/app" .venv/bin/python scripts/gpu_train.py prepare "$@" || exit $?
  echo "gpu-train: on the GPU machine run 'bash scripts/gpu-train.sh' with carry [\".music\", \".whl\"]"
  exit 0
fi
[ $# -eq 0 ] || { echo "gpu-train: unknown argument '$1' (only --prepare)" >&2; exit 2; }

if [ -n "${GPU_TRAIN_PYTHON:-}" ]; then PY=$GPU_TRAIN_PYTHON
elif [ -x .venv/bin/python ]; then PY=$ROOT/.venv/bin/python
elif python3 -c 'import torch' 2>/dev/null; then PY=$(command -v python3)
else echo "gpu-train: no python with torch here" >&2; exit 2; fi
export PYTHONPATH="$ROOT/app${PYTHONPATH:+:$PYTHONPATH}"

# the carried wheels, only where the interpreter lacks what training and the probes import
if ! "$PY" -c 'import soundfile, nnAudio, moderngl, miniaudio, mido, tomli_w' 2>/dev/null && compgen -G ".whl/*.whl" >/dev/null; then
  site=${TMPDIR:-/tmp}/immersions-gpu-train-site
  "$PY" -m pip install -q --disable-pip-version-check --no-index --no-deps --no-compile --no-cache-dir \
    --upgrade --target "$site" .whl/*.whl && export PYTHONPATH="$PYTHONPATH:$site" \
    || echo "gpu-train: installing the carried wheels failed; the steps will say what is missing" >&2
fi

scale=${GPU_TRAIN_SCALE:-}
if [ -z "$scale" ]; then
  scale=$("$PY" -c 'import torch; print("gpu" if torch.cuda.is_available() else "tiny")' 2>/dev/null || echo tiny)
fi
exec "$PY" scripts/gpu_train.py run --out "${OUT:-$ROOT/gpu-train}" --scale "$scale" \
  --music "${GPU_TRAIN_MUSIC:-.music}" --python "$PY"
