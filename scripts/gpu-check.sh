#!/usr/bin/env bash
# The GPU check: CUDA dreaming of `seed` at batch 8, the `seed` graph's layout, an EGL render
# at 1920x1080 with 1 M connections and bloom, and 50 training steps of `seed`, each a step
# under its own time limit with its own JSON file, then summary.json. Without CUDA (or with
# GPU_CHECK_SCALE=tiny) the same four steps run with tiny settings on the CPU, for CI.
#
#   bash scripts/gpu-check.sh            run the check (about 3 minutes on an H200, at most 8)
#   bash scripts/gpu-check.sh --prepare  on a machine with a package registry: fetch into .whl/
#                                        and .gl/ what a GPU machine without one lacks
#
# A GPU lease (docs/benchmarks.md, "GPU check"): prepare here once, then
#   run: bash scripts/gpu-check.sh   carry: [".whl", ".gl"]   timeout_s: 540
# and the JSON files come back from $OUT.
#
# Environment:
#   OUT               folder for the JSON files (default: gpu-check/ in the checkout)
#   GPU_CHECK_SCALE   gpu or tiny (default: gpu when torch sees CUDA, else tiny)
#   GPU_CHECK_PYTHON  the interpreter (default: .venv/bin/python, else a python3 that has
#                     torch, as on the lent GPU machines, else what scripts/setup.sh makes)
#   GPU_CHECK_BUDGET  seconds for all steps together (default 420 on a GPU, 2400 tiny; each step
#                     has its own limit too)
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

# What the four steps import beyond the lent GPU machines' image (torch, numpy, scipy,
# matplotlib, safetensors, tqdm are there): carried as wheels, the versions tested here.
CARRIED_PACKAGES=(nnAudio moderngl glcontext miniaudio cffi pycparser mido tomli_w)
# libglvnd's EGL and GL front ends; NVIDIA's driver brings the EGL vendor library itself
CARRIED_DEBS=(libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
WHEEL_PYTHON=${GPU_CHECK_WHEEL_PYTHON:-3.12}  # the lent machines' python3

pick_python() {
  if [ -n "${GPU_CHECK_PYTHON:-}" ]; then echo "$GPU_CHECK_PYTHON"; return; fi
  if [ -x .venv/bin/python ]; then echo "$ROOT/.venv/bin/python"; return; fi
  if command -v python3 >/dev/null 2>&1 && python3 -c 'import torch' 2>/dev/null; then command -v python3; return; fi
  return 1
}

prepare() {
  local py
  py=$(pick_python) || { echo "gpu-check: no python with torch here; run scripts/setup.sh first" >&2; exit 2; }
  local specs=() name version
  for name in "${CARRIED_PACKAGES[@]}"; do
    version=$("$py" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$name" 2>/dev/null) \
      || { echo "gpu-check: $name is not installed for $py; run scripts/setup.sh first" >&2; exit 2; }
    specs+=("$name==$version")
  done
  rm -rf .whl && mkdir -p .whl  # one version of each: two stop the install there
  local platforms=()
  for tag in manylinux_2_35 manylinux_2_34 manylinux_2_31 manylinux_2_28 manylinux_2_27 manylinux_2_24 \
             manylinux_2_17 manylinux2014 manylinux1; do
    platforms+=(--platform "${tag}_x86_64")
  done
  "$py" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: --python-version "$WHEEL_PYTHON" \
    --implementation cp "${platforms[@]}" -d .whl "${specs[@]}" || exit 2
  mkdir -p .gl /tmp/immersions-apt-amd64/partial
  local apt=(-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/immersions-apt-amd64)
  apt-get -q "${apt[@]}" update >/dev/null && (cd .gl && rm -f ./*.deb && apt-get -q "${apt[@]}" download "${CARRIED_DEBS[@]}") \
    || { echo "gpu-check: could not fetch the EGL packages (apt-get)" >&2; exit 2; }
  echo "gpu-check: prepared $(ls .whl | wc -l) wheels in .whl/ ($(du -sh .whl | cut -f1)) and $(ls .gl/*.deb | wc -l) packages in .gl/ ($(du -sh .gl | cut -f1))"
  echo "gpu-check: on the GPU machine run 'bash scripts/gpu-check.sh' with carry [\".whl\", \".gl\"]"
}

if [ "${1:-}" = "--prepare" ]; then prepare; exit 0; fi
[ $# -eq 0 ] || { echo "gpu-check: unknown argument '$1' (only --prepare)" >&2; exit 2; }

OUT=${OUT:-$ROOT/gpu-check}
mkdir -p "$OUT"
notes=$(mktemp)
trap 'rm -f "$notes"' EXIT
note() { echo "$*" >>"$notes"; echo "gpu-check: $*"; }

if ! PY=$(pick_python); then
  note "no python with torch: running scripts/setup.sh (needs a package registry)"
  if timeout 900 bash scripts/setup.sh >>"$notes" 2>&1; then PY=$ROOT/.venv/bin/python
  else note "scripts/setup.sh failed; the steps will say what is missing"; PY=$(command -v python3 || echo python3); fi
fi
note "python: $PY"

# the package from this checkout, whatever is installed
export PYTHONPATH="$ROOT/app${PYTHONPATH:+:$PYTHONPATH}"

# carried wheels, only where the interpreter lacks what the steps import
if ! "$PY" -c 'import nnAudio, moderngl, miniaudio, mido, tomli_w' 2>/dev/null; then
  if compgen -G ".whl/*.whl" >/dev/null; then
    site=${TMPDIR:-/tmp}/immersions-gpu-check-site
    if "$PY" -m pip install -q --disable-pip-version-check --no-index --no-deps --no-compile --no-cache-dir \
         --upgrade --target "$site" .whl/*.whl >>"$notes" 2>&1; then
      export PYTHONPATH="$PYTHONPATH:$site"
      note "installed $(ls .whl/*.whl | wc -l) carried wheels into $site"
    else
      note "installing the carried wheels failed"
    fi
  else
    note "packages missing and no .whl/ carried (run 'scripts/gpu-check.sh --prepare' where a registry is reachable)"
  fi
fi

# carried EGL front ends (libglvnd), only on an NVIDIA machine that has none: they are
# unpacked into / (the lent machines run commands as root and are thrown away after)
# (grep reads a process substitution: with pipefail, `ldconfig -p | grep -q` can fail on SIGPIPE)
if ! grep -q 'libEGL\.so\.1' <(ldconfig -p 2>/dev/null); then
  if compgen -G ".gl/*.deb" >/dev/null && [ "$(id -u)" -eq 0 ] \
     && { command -v nvidia-smi >/dev/null || [ -e /dev/nvidiactl ]; }; then
    for deb in .gl/*.deb; do dpkg -x "$deb" /; done
    ldconfig
    note "unpacked $(ls .gl/*.deb | wc -l) carried EGL packages"
  else
    note "no libEGL.so.1, and no .gl/ carried (or not root, or no NVIDIA driver): the render step will fail"
  fi
fi
# NVIDIA's EGL vendor file where libglvnd does not look for it (the lent machines mount the driver there)
nvidia_egl=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
if [ -z "${__EGL_VENDOR_LIBRARY_FILENAMES:-}" ] && [ -f "$nvidia_egl" ] \
   && ! compgen -G "/usr/share/glvnd/egl_vendor.d/*nvidia*" >/dev/null; then
  export __EGL_VENDOR_LIBRARY_FILENAMES=$nvidia_egl
  note "EGL vendor: $nvidia_egl"
fi
# and the vendor library itself, where the loader's cache does not list the driver's folder
if [ -d /usr/local/nvidia/lib64 ] && ! grep -q 'libEGL_nvidia' <(ldconfig -p 2>/dev/null); then
  export LD_LIBRARY_PATH="/usr/local/nvidia/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  note "library path: /usr/local/nvidia/lib64"
fi

"$PY" scripts/gpu_check.py --out "$OUT" --scale "${GPU_CHECK_SCALE:-auto}" --python "$PY" \
  ${GPU_CHECK_BUDGET:+--budget "$GPU_CHECK_BUDGET"} --setup-notes "$notes"
