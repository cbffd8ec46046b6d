#!/usr/bin/env bash
# Format and lint checks, the fast first step of scripts/test.sh:
#   clang-format --dry-run on the C/C++ sources (.clang-format), ruff check on
#   the Python (pyproject.toml [tool.ruff]).  Fix with `clang-format -i FILE`
#   and `ruff check --fix`.  ruff is pinned and kept in a small venv of its own
#   (UNSWAG_LINT_VENV, default ~/.cache/unswag-lint-venv); clang-format comes
#   from apt when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
RUFF_VERSION=0.17.6
VENV=${UNSWAG_LINT_VENV:-$HOME/.cache/unswag-lint-venv}

if ! command -v clang-format >/dev/null; then
  echo "== installing clang-format"
  if [ "$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq clang-format >/dev/null
  else sudo apt-get update -qq && sudo apt-get install -y -qq clang-format >/dev/null; fi
fi
if [ "$("$VENV/bin/ruff" --version 2>/dev/null)" != "ruff $RUFF_VERSION" ]; then
  echo "== installing ruff $RUFF_VERSION into $VENV"
  [ -x "$VENV/bin/pip" ] || python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "ruff==$RUFF_VERSION"
fi

echo "== clang-format ($(clang-format --version | grep -o 'version [0-9.]*'))"
# every C/C++/CUDA source but the generated tables
git ls-files '*.c' '*.h' '*.inc' '*.cpp' '*.cu' '*.cuh' |
  grep -v -E '^src/core/(codebook_tables\.c|gelu_f32_table\.h)$' |
  xargs clang-format --dry-run -Werror --style=file
echo "== ruff check"
"$VENV/bin/ruff" check --quiet .
echo "format and lint: clean"
