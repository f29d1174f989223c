"""Numbers typed into the run forms (Evaluate, Fine-tune): parsed, checked against a lower bound, and
refused with a CapsearchError naming the field."""

from __future__ import annotations

from typing import Any

from core.errors import CapsearchError


def _numbers(parts: list[str], kind: type[int] | type[float], low: float) -> list[Any] | None:
    """``parts`` as ``kind`` when there is at least one and none is below ``low``; None otherwise."""
    try:
        values = [kind(p) for p in parts]
    except ValueError:
        return None
    if not values or any(v < low for v in values):
        return None
    return values


def parse_ints(text: str, what: str, low: int = 1) -> list[int]:
    """Integers from ``text`` (spaces or commas); a CapsearchError naming ``what`` otherwise."""
    values = _numbers(text.replace(",", " ").split(), int, low)
    if values is None:
        raise CapsearchError(f"{what} must be integers ≥ {low}, got {text!r}", hint=f"e.g. {what}: 1 5 10")
    return values


def parse_number(text: str, what: str, kind: type[int] | type[float], low: float) -> Any:
    """One ``kind`` number ≥ ``low`` from ``text``; a CapsearchError naming ``what`` otherwise."""
    values = _numbers([text.strip()], kind, low)
    if values is None:
        raise CapsearchError(f"{what} must be a number ≥ {low}, got {text!r}", hint=f"fix the {what} field")
    return values[0]
