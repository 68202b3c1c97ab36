# Sourced by scripts/test and scripts/soak_catalog: what the catalog and storage tests need besides the venv.
# PostgreSQL's server programs (initdb, pg_ctl): the tests start a throw-away server of their own
# (tests/services.py), so nothing is configured system-wide. Where they are missing and we may install
# (root with apt-get, as on CI), `apt-get install -y postgresql`; else say how. The S3 server is moto, from
# the test extras in the venv.

ensure_postgresql() {
    local found=""
    if [ -n "${FSCTL_PG_BIN:-}" ] && [ -x "$FSCTL_PG_BIN/initdb" ]; then
        found="$FSCTL_PG_BIN"
    elif command -v initdb > /dev/null 2>&1; then
        found="$(dirname "$(readlink -f "$(command -v initdb)")")"
    else
        found="$(ls -d /usr/lib/postgresql/*/bin 2> /dev/null | sort -V | tail -n 1)"
        if [ -n "$found" ] && [ ! -x "$found/initdb" ]; then found=""; fi
    fi
    if [ -z "$found" ]; then
        if [ "$(id -u)" = 0 ] && command -v apt-get > /dev/null 2>&1; then
            echo "PostgreSQL is not installed: installing it (apt-get install -y postgresql) for the catalog tests" >&2
            export DEBIAN_FRONTEND=noninteractive
            if ! { apt-get install -y -q postgresql > /tmp/fsctl-apt.log 2>&1 \
                   || { apt-get update -q > /tmp/fsctl-apt.log 2>&1 \
                        && apt-get install -y -q postgresql >> /tmp/fsctl-apt.log 2>&1; }; }; then
                cat /tmp/fsctl-apt.log >&2
                echo "installing PostgreSQL failed (log above)" >&2
                exit 1
            fi
            found="$(ls -d /usr/lib/postgresql/*/bin 2> /dev/null | sort -V | tail -n 1)"
        else
            echo "PostgreSQL's server programs (initdb, pg_ctl) are needed by the catalog tests: install them" \
                 "(Debian/Ubuntu: sudo apt-get install postgresql), or set FSCTL_PG_BIN to their directory" >&2
            exit 1
        fi
    fi
    export FSCTL_PG_BIN="$found"
}

# Chromium and its WebDriver, for the console's browser tests (tests/test_console_browser.py: Selenium drives
# Debian's chromium through Debian's chromedriver, headless; nothing is downloaded by Selenium or a browser
# installer). Where missing and we may install (root with apt-get, as on CI): `apt-get install -y chromium
# chromium-driver`; else say how. FSCTL_CHROMIUM / FSCTL_CHROMEDRIVER point at others.
ensure_chromium() {
    local browser="${FSCTL_CHROMIUM:-}" driver="${FSCTL_CHROMEDRIVER:-}"
    [ -n "$browser" ] || browser="$(command -v chromium || command -v chromium-browser || true)"
    [ -n "$driver" ] || driver="$(command -v chromedriver || true)"
    if [ -z "$browser" ] || [ -z "$driver" ]; then
        if [ "$(id -u)" = 0 ] && command -v apt-get > /dev/null 2>&1; then
            echo "Chromium is not installed: installing it (apt-get install -y chromium chromium-driver) for the" \
                 "console's browser tests" >&2
            export DEBIAN_FRONTEND=noninteractive
            if ! { apt-get install -y -q chromium chromium-driver > /tmp/fsctl-apt-chromium.log 2>&1 \
                   || { apt-get update -q > /tmp/fsctl-apt-chromium.log 2>&1 \
                        && apt-get install -y -q chromium chromium-driver >> /tmp/fsctl-apt-chromium.log 2>&1; }; }; then
                cat /tmp/fsctl-apt-chromium.log >&2
                echo "installing Chromium failed (log above)" >&2
                exit 1
            fi
            browser="$(command -v chromium)"
            driver="$(command -v chromedriver)"
        else
            echo "Chromium and chromedriver are needed by the console's browser tests: install them" \
                 "(Debian: sudo apt-get install chromium chromium-driver; Ubuntu's chromium is a snap: use" \
                 "Google's or set FSCTL_CHROMIUM and FSCTL_CHROMEDRIVER to a matching pair)" >&2
            exit 1
        fi
    fi
    export FSCTL_CHROMIUM="$browser" FSCTL_CHROMEDRIVER="$driver"
    export SE_OFFLINE=true  # Selenium Manager never downloads anything
}
