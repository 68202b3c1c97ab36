# Sourced by the scripts in scripts/: `setup_venv [extras]` makes .venv on a fresh machine and installs the
# project into it (e.g. `setup_venv test`). A function, because a sourced file sees its caller's arguments.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

setup_venv() {
    local spec="."
    if [ -n "${1:-}" ]; then spec=".[$1]"; fi
    if [ ! -x .venv/bin/python ]; then
        "${PYTHON:-python3}" -m venv .venv
    fi
    # Quiet unless it fails: setuptools warns on every editable install, which is noise to the user.
    if ! .venv/bin/python -m pip install --disable-pip-version-check -e "$spec" > .venv/install.log 2>&1; then
        cat .venv/install.log >&2
        echo "installing the project into .venv failed (log above, also in .venv/install.log)" >&2
        exit 1
    fi
}
