#!/usr/bin/env bash
# The README's test command: set up .venv on a fresh clone, then run the whole test suite.
source "$(dirname "$0")/_setup.sh"
exec .venv/bin/python -m pytest "$@"
