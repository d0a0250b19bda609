#!/usr/bin/env bash
# One-time (and idempotent) set-up: a virtual environment in .venv with dmgd and its
# test tools installed. torch is pinned to the CPU wheel that lies on this machine's disk.
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
stamp=.venv/.dmgd-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  # pip warns about this machine's empty local index folders; those lines are noise.
  .venv/bin/python -m pip install --quiet -e ".[test]" 2> >(grep -v "is ignored: it is neither" >&2)
  touch "$stamp"
fi
