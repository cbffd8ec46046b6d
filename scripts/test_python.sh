#!/usr/bin/env bash
# Python tests: builds and installs the package (`pip install .`, CPU only: CI
# compiles the CUDA part separately) into a cached virtual environment with
# torch, torchvision, transformers and CPU jax from PyPI, then runs pytest on
# tests/python.  Exits nonzero on any failure, and when no test ran.
#   UNSWAG_VENV   the environment to create/reuse (default ~/.cache/unswag-venv)
#   PYTEST_ARGS   extra pytest arguments
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${UNSWAG_VENV:-$HOME/.cache/unswag-venv}
PY=${PYTHON:-python3}

if [ ! -x "$VENV/bin/python" ]; then
  echo "== creating $VENV"
  "$PY" -m venv "$VENV" || {
    # Debian's python3 needs python3-venv for this
    apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null && "$PY" -m venv "$VENV"; }
fi
stamp="$VENV/.unswag-deps-v2"
if [ ! -e "$stamp" ]; then
  echo "== installing test dependencies into $VENV (cached for later runs)"
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q torch torchvision transformers pytest numpy jax flax scikit-build-core
  command -v cmake >/dev/null || "$VENV/bin/pip" install -q cmake ninja
  touch "$stamp"
fi

echo "== pip install . (CPU build)"
PATH="$VENV/bin:$PATH" "$VENV/bin/pip" install -q --no-deps --force-reinstall --no-build-isolation \
  -Ccmake.define.UNSWAG_CUDA=OFF .

echo "== pytest tests/python"
# run from the tests directory so the source tree's python/ is never imported
# instead of the installed package
cd tests/python
set +e
# jax is installed, so the CPU FFI handlers must have been built: fail if not
UNSWAG_REQUIRE_JAX_FFI=1 "$VENV/bin/python" -m pytest -q -p no:cacheprovider ${PYTEST_ARGS:-} .
rc=$?
set -e
if [ $rc -eq 5 ]; then
  echo "no tests were collected: failing" >&2
  exit 1
fi
exit $rc
