#!/usr/bin/env bash
# The Python client's tests, from a fresh machine: a venv, the package with its test extras
# (from this directory, as a user would install it), then pytest against the real permitd.
#
#   clients/python/scripts/test.sh [PYTEST ARGS...]
#
# Environment:
#   PYTHON       interpreter for the venv (default python3; must be >= 3.9)
#   VENV         where the venv lives (default clients/python/.venv; reused when present)
#   PERMITD_BIN  the permitd binary to test against (default: target/release/permitd,
#                built here with `cargo build --release --locked` so it matches the source)
#
# Fails (never skips) when Python, venv, pip packages or the binary are missing, and when
# pytest collects no test (its exit status 5).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
repo="$(cd "$here/../.." && pwd)"
py="${PYTHON:-python3}"
venv="${VENV:-$here/.venv}"

if ! command -v "$py" >/dev/null 2>&1; then
  echo "clients/python: $py not found: the Python client's tests need Python >= 3.9" >&2
  exit 1
fi
"$py" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 9) else "Python >= 3.9 needed, not " + sys.version)'

if [ ! -x "$venv/bin/python" ]; then
  "$py" -m venv "$venv" || {
    echo "clients/python: '$py -m venv' failed (on Debian: apt-get install python3-venv)" >&2
    exit 1
  }
fi
export PIP_DISABLE_PIP_VERSION_CHECK=1
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet -c "$here/constraints.txt" "$here[test]"
# Not editable, and rebuilt every run (from a clean build dir): the tests import the package
# as installed, which checks the packaging too.
rm -rf "$here/build"
"$venv/bin/python" -m pip install --quiet --force-reinstall --no-deps "$here"
"$venv/bin/python" -c 'import grpc, google.protobuf, permitd; print("permitd client", permitd.__version__, "grpcio", grpc.__version__, "protobuf", google.protobuf.__version__)'

if [ -z "${PERMITD_BIN:-}" ]; then
  (cd "$repo" && cargo build --release --locked)
  export PERMITD_BIN="$repo/target/release/permitd"
fi

cd "$here"
set +e
"$venv/bin/python" -m pytest "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
  echo "clients/python: pytest collected no tests" >&2
  exit 1
fi
exit "$status"
