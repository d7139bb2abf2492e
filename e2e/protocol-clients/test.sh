#!/usr/bin/env bash
# `make protocol-test`: the runtime's A2A and MCP servers against the official Python
# SDKs (a2a-sdk, mcp from PyPI) as clients, with real `switchboard-runtime run`
# processes on a real broker.
#  1. a venv (created once, cached: ~/.cache/switchboard/protocol-venv, or
#     SWITCHBOARD_PROTOCOL_VENV) with the pinned requirements.txt; reinstalled only
#     when that file changes;
#  2. the switchboard-runtime binary, unless SWITCHBOARD_RUNTIME_BIN names one;
#  3. pytest against a broker started by e2e/infra/with-infra.sh --kafka-only.
# pytest's exit code is ours: a failure, an error or nothing collected (5) fails.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="${SWITCHBOARD_PROTOCOL_VENV:-$HOME/.cache/switchboard/protocol-venv}"
python="${PYTHON:-python3}"
cargo="${CARGO:-cargo}"

step() { echo "protocol-test: $*" >&2; }

if [ ! -x "$venv/bin/python" ]; then
  step "creating venv $venv"
  mkdir -p "$(dirname "$venv")"
  "$python" -m venv "$venv"
fi
stamp="$venv/.switchboard-requirements"
if ! cmp -s "$here/requirements.txt" "$stamp"; then
  step "installing requirements.txt"
  "$venv/bin/python" -m pip install --quiet -r "$here/requirements.txt"
  cp "$here/requirements.txt" "$stamp"
fi

if [ -z "${SWITCHBOARD_RUNTIME_BIN:-}" ]; then
  step "building switchboard-runtime"
  (cd "$root" && "$cargo" build --quiet -p switchboard-runtime --bin switchboard-runtime)
  target="${CARGO_TARGET_DIR:-target}"
  case "$target" in /*) ;; *) target="$root/$target" ;; esac
  SWITCHBOARD_RUNTIME_BIN="$target/debug/switchboard-runtime"
  [ -x "$SWITCHBOARD_RUNTIME_BIN" ] || { echo "protocol-test: no binary at $SWITCHBOARD_RUNTIME_BIN" >&2; exit 1; }
fi
export SWITCHBOARD_RUNTIME_BIN

step "pytest against a real broker"
cd "$here"
rc=0
"$root/e2e/infra/with-infra.sh" --kafka-only "$venv/bin/python" -m pytest -q -p no:cacheprovider "$@" || rc=$?
if [ "$rc" = 5 ]; then
  echo "protocol-test: pytest collected no tests" >&2
fi
exit "$rc"
