#!/usr/bin/env bash
# Make (once) the Python virtual environment the interop tests use, from PyPI, in
# ~/.cache/viewpulse (VIEWPULSE_CACHE overrides), named for the requirements' checksum so that
# a changed list makes a new one; print its python. Called by .ci/run and by the tests.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
req="$here/requirements.txt"
sum="$(sha256sum "$req" | cut -c1-12)"
cache="${VIEWPULSE_CACHE:-$HOME/.cache/viewpulse}"
venv="$cache/python-$sum"
if [ ! -x "$venv/bin/python" ] || [ ! -f "$venv/.complete" ]; then
  rm -rf "$venv"
  mkdir -p "$cache"
  echo "installing the interop tests' Python packages into $venv (pyarrow, polars, pandas, confluent-kafka from PyPI)" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$req" >&2
  touch "$venv/.complete"
fi
echo "$venv/bin/python"
