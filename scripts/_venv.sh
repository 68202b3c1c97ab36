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
# Quiet unless it fails: setuptools warns on every editable install, which is noise to the user.
if ! .venv/bin/python -m pip install --disable-pip-version-check -e "$spec" > .venv/install.log 2>&1; then
    cat .venv/install.log >&2
    echo "installing the project into .venv failed (log above, also in .venv/install.log)" >&2
    exit 1
fi
