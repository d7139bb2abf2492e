#!/usr/bin/env bash
# `make python-test`: the Python package end to end.
#  1. a venv (created once, cached: ~/.cache/switchboard/python-venv, or
#     SWITCHBOARD_PY_VENV) with maturin, autogen-core and pytest from PyPI; reinstalled
#     only when requirements-dev.txt changes;
#  2. fmt and clippy of the extension crate (it is not a workspace member);
#  3. the wheel built by maturin (release; CARGO_TARGET_DIR shared with the workspace)
#     and installed into the venv, as `pip install ./python` would;
#  4. the switchboard-runtime, switchboard-operator and switchboard-node-agent binaries
#     (interop and operator-pod tests), unless SWITCHBOARD_*_BIN name them;
#  5. pytest against a real broker and API server started by e2e/infra/with-infra.sh
#     (with --bench: python/bench/bench.py instead, into bench/results/python-latest.json).
# With --install: steps 1 and 3 only (`make demo` uses it), then the venv's path on stdout.
# pytest's exit code is ours: a failure, an error or nothing collected (5) fails.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
py_dir="$(cd "$here/.." && pwd)"
root="$(cd "$py_dir/.." && pwd)"
venv="${SWITCHBOARD_PY_VENV:-$HOME/.cache/switchboard/python-venv}"
python="${PYTHON:-python3}"
cargo="${CARGO:-cargo}"

step() { echo "python-test: $*" >&2; }

if [ ! -x "$venv/bin/python" ]; then
  step "creating venv $venv"
  mkdir -p "$(dirname "$venv")"
  "$python" -m venv "$venv"
fi
stamp="$venv/.switchboard-requirements"
if ! cmp -s "$py_dir/requirements-dev.txt" "$stamp"; then
  step "installing requirements-dev.txt"
  "$venv/bin/python" -m pip install --quiet --upgrade pip
  "$venv/bin/python" -m pip install --quiet -r "$py_dir/requirements-dev.txt"
  cp "$py_dir/requirements-dev.txt" "$stamp"
fi

bench=0
install=0
case "${1:-}" in
--bench) bench=1; shift ;;
--install) install=1; shift ;;
esac

if [ "$bench" = 0 ] && [ "$install" = 0 ]; then
  step "fmt + clippy (python/Cargo.toml)"
  (cd "$py_dir" && "$cargo" fmt --check && "$cargo" clippy --release --all-targets --locked -- -D warnings)
fi

step "building the wheel"
dist="$root/.state/python-dist"
rm -rf "$dist"
(cd "$py_dir" && VIRTUAL_ENV="$venv" "$venv/bin/maturin" build --release --locked --quiet --out "$dist" --interpreter "$venv/bin/python")
"$venv/bin/python" -m pip install --quiet --force-reinstall --no-deps "$dist"/switchboard_agents-*.whl
# Dependencies from the wheel's metadata (a no-op when the venv has them).
"$venv/bin/python" -m pip install --quiet "$dist"/switchboard_agents-*.whl
if [ "$install" = 1 ]; then
  echo "$venv"
  exit 0
fi

if [ "$bench" = 1 ]; then
  # `make bench-python`: the benchmark program instead of the tests.
  step "python/bench/bench.py against a real broker"
  mkdir -p "$root/bench/results"
  out="$root/bench/results/python-latest.json"
  # shellcheck disable=SC2016 # expanded by the inner shell, once the broker is up
  "$root/e2e/infra/with-infra.sh" --kafka-only sh -c '"$1" "$2" --bootstrap "$SWITCHBOARD_TEST_KAFKA" > "$3.tmp"' \
    sh "$venv/bin/python" "$py_dir/bench/bench.py" "$out"
  mv "$out.tmp" "$out"
  echo "bench: wrote $out" >&2
  exit 0
fi

# workspace_bin PACKAGE BIN: builds BIN as the e2e tests do (e2e/src/binary.rs), so
# features unify the same way and under `make test` this is a no-op that finds the
# binary built there; prints its path.
workspace_bin() {
  local path
  path="$(cd "$root/e2e" && "$cargo" build --quiet -p switchboard-e2e -p "$1" \
    --bin "$2" --message-format=json-render-diagnostics |
    "$venv/bin/python" -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == sys.argv[1]:
        print(m["executable"])' "$2")"
  [ -x "$path" ] || { echo "python-test: no $2 binary" >&2; return 1; }
  echo "$path"
}
# The Rust interop tests run switchboard-runtime; the operator-pod test runs the
# operator and the node agent against the real API server.
step "building switchboard-runtime, switchboard-operator, switchboard-node-agent"
SWITCHBOARD_RUNTIME_BIN="${SWITCHBOARD_RUNTIME_BIN:-$(workspace_bin switchboard-runtime switchboard-runtime)}"
SWITCHBOARD_OPERATOR_BIN="${SWITCHBOARD_OPERATOR_BIN:-$(workspace_bin switchboard-operator switchboard-operator)}"
SWITCHBOARD_NODE_AGENT_BIN="${SWITCHBOARD_NODE_AGENT_BIN:-$(workspace_bin switchboard-e2e switchboard-node-agent)}"
export SWITCHBOARD_RUNTIME_BIN SWITCHBOARD_OPERATOR_BIN SWITCHBOARD_NODE_AGENT_BIN

step "pytest against a real broker and API server"
cd "$py_dir/tests"
"$root/e2e/infra/with-infra.sh" "$venv/bin/python" -m pytest -q -p no:cacheprovider "$@"
