#!/usr/bin/env bash
# atelier's front door. From a fresh clone:
#   bash run.sh demo   set up .venv and run the demo (the world whose truth is known) into ./demo
#   bash run.sh test   set up .venv (with dev tools and Debian's chromium) and run the tests
# Anything after the verb is passed on (to `atelier demo` or to pytest).
set -euo pipefail
cd "$(dirname "$0")"
VENV="${ATELIER_VENV:-.venv}"

# Machines whose pip.conf lists local package folders that are absent make pip say so
# once per package ("Location ... is ignored"); that is the machine's setting, not a fault.
quiet_pip() {
    "$VENV/bin/python" -m pip "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
}

setup() {
    if [ ! -x "$VENV/bin/python" ]; then
        python3 -m venv "$VENV"
    fi
    quiet_pip install --quiet --upgrade pip wheel
    # torch/torchvision come from the registry as a matching pair (see pyproject.toml).
    quiet_pip install --quiet -e ".[dev]"
}

install_chromium() {
    # The browser test drives Debian's chromium (Playwright's own download cannot work offline).
    if ! command -v chromium >/dev/null 2>&1; then
        if command -v apt-get >/dev/null 2>&1; then
            SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
            $SUDO apt-get update -qq >/dev/null && \
                DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
        fi
    fi
}

verb="${1:-}"; shift || true
case "$verb" in
    demo)
        setup
        exec "$VENV/bin/atelier" demo --workdir "${ATELIER_DEMO_DIR:-demo}" "$@"
        ;;
    test)
        setup
        install_chromium
        export ATELIER_REQUIRE_BROWSER=1
        exec "$VENV/bin/python" -m pytest -q "$@"
        ;;
    *)
        echo "usage: bash run.sh demo|test [args…]" >&2
        exit 2
        ;;
esac
