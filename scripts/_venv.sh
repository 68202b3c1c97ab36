# Sourced by scripts/test and scripts/demo: make .venv on a fresh machine and install the project into it.
# Usage: . scripts/_venv.sh [extras]   (e.g. "test")
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
spec="."
if [ -n "${1:-}" ]; then spec=".[$1]"; fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e "$spec"
