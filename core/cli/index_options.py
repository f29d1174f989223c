"""Index options, generated from the registry (:mod:`core.index.registry`): one flag per kind parameter
(``--m``, ``--ef-search``, ``--nlist``, ``--nprobe``, ``--pq-m`` ...) and the ``auto`` aims
(``--max-index-memory``, ``--target-recall``, ``--latency-budget``). A flag a kind does not take is ignored
for that kind; an unset one leaves the kind's default."""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable

from core.cli.numbers import number
from core.index.auto import DEFAULT_MEMORY_FRACTION
from core.index.kind_base import IndexSpec
from core.index.registry import _REGISTRY, all_params, spec_from_options

_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}


def memory_size(text: str) -> int:
    """``512M``, ``2G``, ``1.5g`` or a byte count, as bytes."""
    found = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmgt]?)i?b?\s*", text.lower())
    if not found or float(found.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a memory size (e.g. 512M, 2G)")
    return int(float(found.group(1)) * _UNITS[found.group(2)])


def _bounded(low: int, high: int, name: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{name} must be in [{low}, {high}], got {value}")
        return value

    parse.__name__ = f"integer in [{low}, {high}]"
    return parse


def add_index_options(parser: argparse.ArgumentParser) -> None:
    """A flag for every parameter of every registered kind, and the auto options."""
    for name, p in all_params().items():
        users = [
            k for k, cls in _REGISTRY.items() if name in {q.name for q in cls.param_specs(with_knob=True)}
        ]
        parser.add_argument(
            f"--{name.replace('_', '-')}",
            dest=name,
            type=_bounded(p.low, p.high, name),
            default=None,
            help=f"{p.help} ({', '.join(users)}; {p.low}-{p.high})",
        )
    parser.add_argument(
        "--max-index-memory",
        type=memory_size,
        default=None,
        help=f"auto: memory budget of an index, e.g. 2G (default {DEFAULT_MEMORY_FRACTION * 100:.0f}%% of physical RAM)",
    )
    parser.add_argument(
        "--target-recall",
        type=number(0.0, 1.0, low_open=True, what="target recall"),
        default=None,
        help="auto: tune the knob to this recall@10 against exact search (default 0.95)",
    )
    parser.add_argument(
        "--latency-budget",
        type=number(0.0, low_open=True, what="latency budget"),
        default=None,
        metavar="MS",
        help="auto: tune the knob to this median single-query latency in ms instead of a recall",
    )


def index_spec(args: argparse.Namespace, kind: str) -> IndexSpec:
    """The spec of ``kind`` from the parsed flags."""
    options = dict(vars(args))
    options["max_memory"] = options.get("max_index_memory")
    options["latency_budget_ms"] = options.get("latency_budget")
    return spec_from_options(kind, options)
