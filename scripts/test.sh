#!/usr/bin/env bash
# Set up (if needed, with the test tools) and run the test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
IMMERSIONS_EXTRAS=test bash scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
