#!/usr/bin/env bash
# Set up (if needed) and start Immersions on the shipped default model.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/immersions info "$@"
