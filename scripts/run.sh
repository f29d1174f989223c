#!/usr/bin/env bash
# The README's main command: set up .venv on a fresh clone, then open capsearch on the built-in demo
# (synthetic captioned scenes + the compact model trained on them; both cached after the first start).
# Without a terminal (piped, CI) it runs the same demo as a CLI pipeline instead. Extra arguments go to
# `capsearch app`, e.g. `scripts/run.sh --dataset flickr8k --model capsearch-compact-flickr8k`.
source "$(dirname "$0")/_setup.sh"
if [ -t 0 ] && [ -t 1 ]; then
    exec .venv/bin/capsearch app "$@"
fi
exec .venv/bin/capsearch demo
