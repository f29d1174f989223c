"""rclip-style query arithmetic: ``dog + snow - night``, weights ``2:dog`` or ``-0.5:night``, image terms.

A query is terms joined by `` + `` and `` - `` (an operator needs whitespace on both sides, so
``well-lit`` or ``-0.5:night`` are not split). A term may start with a numeric weight and a colon
(``2:dog``); its effective weight is sign x weight. A term that names an existing image file (or that the
caller's resolver recognises, such as a dataset image id) is embedded as an image. Double quotes keep
operators inside a term (``"salt + pepper" - cat``) and are removed. The query vector is
``sum(weight_i * embedding_i)`` over the L2-normalised term embeddings, normalised again.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.data.images import looks_like_image
from core.errors import CapsearchError

_OPERATOR = re.compile(r"\s+([+-])(?=\s|$)")
_LEADING = re.compile(r"^([+-])\s+")
_WEIGHT = re.compile(r"^([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?):(.*)$", re.DOTALL)

ImageResolver = Callable[[str], Path | None]


class QueryError(CapsearchError):
    """A search query cannot be parsed or embedded."""


@dataclass(frozen=True)
class QueryTerm:
    """One term: text to embed, or an image path; ``weight`` already carries the operator's sign."""

    weight: float
    text: str
    image: Path | None = None


def image_file(term: str) -> Path | None:
    """``term`` as a path when it names an existing image file, else None."""
    path = Path(term).expanduser()
    try:
        return path.resolve() if path.is_file() and looks_like_image(path) else None
    except OSError:
        return None


def _unquote(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return text[1:-1].strip()
    return text


def _split(query: str) -> list[tuple[int, str]]:
    """(sign, raw term) pairs, splitting at operators outside double quotes."""
    text = query.strip()
    sign = 1
    leading = _LEADING.match(text)
    if leading:
        sign = -1 if leading.group(1) == "-" else 1
        text = text[leading.end() :]
    parts: list[tuple[int, str]] = []
    start = 0
    for match in _OPERATOR.finditer(text):
        if text.count('"', 0, match.start()) % 2:  # inside quotes
            continue
        parts.append((sign, text[start : match.start()]))
        sign = -1 if match.group(1) == "-" else 1
        start = match.end()
    parts.append((sign, text[start:]))
    return parts


def parse_query(query: str, resolve_image: ImageResolver = image_file) -> list[QueryTerm]:
    """Parse ``query`` into weighted terms; raises :class:`QueryError` on an empty term or a zero weight."""
    if not query.strip():
        raise QueryError("the search query is empty", hint='type some words, e.g. "a dog in the snow"')
    terms: list[QueryTerm] = []
    for sign, raw in _split(query):
        raw = raw.strip()
        weight = 1.0
        match = _WEIGHT.match(raw)
        if match:
            weight, raw = float(match.group(1)), match.group(2)
        text = _unquote(raw)
        if not text:
            raise QueryError(
                f"empty term in query {query!r}",
                hint='terms are joined by " + " or " - ", e.g. "dog + snow - night"',
            )
        if weight == 0:
            raise QueryError(f"term {text!r} has weight 0", hint="drop the term or give it a non-zero weight")
        if not math.isfinite(weight):
            raise QueryError(
                f"term {text!r} has a weight that is not a finite number ({match and match.group(1)})",
                hint="give a weight such as 2 or 0.5",
            )
        terms.append(QueryTerm(weight=sign * weight, text=text, image=resolve_image(text)))
    return terms


def _embed(
    term: QueryTerm, encode_text: Callable[[str], np.ndarray], encode_image: Callable[[Path], np.ndarray]
) -> np.ndarray:
    return encode_image(term.image) if term.image is not None else encode_text(term.text)


def combine(
    terms: list[QueryTerm],
    encode_text: Callable[[str], np.ndarray],
    encode_image: Callable[[Path], np.ndarray],
) -> np.ndarray:
    """The normalised weighted sum of the terms' embeddings (float32 [d])."""
    if not terms:
        raise QueryError("the search query has no terms")
    with np.errstate(over="ignore", invalid="ignore"):  # an overflow is refused below, not warned about
        weighted = [
            term.weight * np.asarray(_embed(term, encode_text, encode_image), dtype=np.float32).reshape(-1)
            for term in terms
        ]
        total = weighted[0]
        for vector in weighted[1:]:
            total = total + vector
    if not np.isfinite(total).all():
        raise QueryError("the query weights are too large to combine", hint="use weights such as 2 or 0.5")
    norm = float(np.linalg.norm(total))
    if not math.isfinite(norm):
        raise QueryError("the query weights are too large to combine", hint="use weights such as 2 or 0.5")
    if norm < 1e-6:
        raise QueryError(
            "the query terms cancel out (their weighted sum is zero)", hint="change a term or a weight"
        )
    return (total / norm).astype(np.float32)
