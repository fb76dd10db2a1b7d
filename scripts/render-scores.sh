#!/usr/bin/env bash
# Render scores from music21's corpus to audio for training (see scripts/render_scores.py):
#
#   bash scripts/render-scores.sh DEST [--hours H] [--seed N]     (default: 6 hours, seed 0)
#
# Sets up what it needs first, through scripts/setup.sh with the `scores` extra: the Debian
# packages fluidsynth and fluid-soundfont-gm, and music21 in the .venv.
# DEST/<composer>/<piece>.flac, and DEST/copyright.
set -euo pipefail
if [ $# -lt 1 ]; then
  echo "usage: bash scripts/render-scores.sh DEST [--hours H] [--seed N]" >&2
  exit 2
fi
dest=$(realpath -m "$1"); shift
cd "$(dirname "$0")/.."
IMMERSIONS_EXTRAS="${IMMERSIONS_EXTRAS:+$IMMERSIONS_EXTRAS,}scores" bash scripts/setup.sh
exec .venv/bin/python scripts/render_scores.py "$dest" "$@"
