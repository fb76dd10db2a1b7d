#!/usr/bin/env bash
# Set up (if needed) and start the performance on the shipped default model:
# full screen, dreaming, playing sound; Tab shows the overlay, Esc quits.
# Extra arguments go to `immersions perform` (e.g. --windowed, --monitor 1).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/immersions perform "$@"
