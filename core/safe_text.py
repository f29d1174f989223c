"""Untrusted text made safe for a terminal: captions, file names, queries, EXIF strings, error messages.

Data reaches the screen through Rich (CLI tables, the app's widgets). Two things in it must never act:
terminal control sequences (ESC, CSI, OSC, C1 controls, carriage returns, bidirectional overrides that
reorder what is shown) and Rich markup (``[link=...]``, ``[on red]``). :func:`visible` shows every such
character as a ``\\x1b``-style escape, and lone surrogates (file names that are not UTF-8, decoded with
``surrogateescape``) as ``\\udcff``, so nothing is lost from view and nothing can fail to encode.
:func:`markup_safe` also escapes Rich markup, for strings that are embedded in markup.
"""

from __future__ import annotations

import json
import re
from typing import Any

from rich.markup import escape

# Unicode "format" characters that reorder or hide text: bidi embeddings/overrides/isolates, zero-width.
_INVISIBLE_FORMAT = frozenset("\u200b\u200c\u200d\u200e\u200f\u2028\u2029\u202a\u202b\u202c\u202d\u202e")
_INVISIBLE_FORMAT |= frozenset("\u2060\u2061\u2062\u2063\u2064\u2066\u2067\u2068\u2069\ufeff")


def _escape_char(ch: str) -> str:
    code = ord(ch)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}"


# C0 and C1 controls, DEL, lone surrogates, and the invisible format characters above.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff" + "".join(sorted(_INVISIBLE_FORMAT)) + "]")
# The same less C0 controls, which JSON escapes in its strings itself (and which it may use between them).
_UNSAFE_IN_JSON = re.compile("[\x7f-\x9f\ud800-\udfff" + "".join(sorted(_INVISIBLE_FORMAT)) + "]")


def visible(text: object) -> str:
    """``text`` as a string with every control, format and surrogate character shown as an escape.

    A backslash that could be mistaken for such an escape stays as it is: the output is for reading,
    not for parsing back. Tabs become one space (they only move the cursor).
    """
    return _UNSAFE.sub(lambda m: " " if m.group() == "\t" else _escape_char(m.group()), str(text))


# Rich reads "\\[" as an escaped bracket even where no tag follows, and backslashes at the end of a string
# as escapes of whatever tag comes after it: both need one more backslash than rich.markup.escape adds.
_BEFORE_PLAIN_BRACKET = re.compile(r"(\\+)(?=\[(?![a-z#/@][^[]*?\]))")
_TRAILING_BACKSLASHES = re.compile(r"(\\+)$")
# Rich also turns ``:name:`` into an emoji (":V:" shows as a victory hand), and markup has no escape for it:
# each colon of such text goes in a tag of no style of its own, which ends the plain run Rich replaces in,
# with the backslashes right before it (Textual reads any backslash before a tag as escaping the tag).
_EMOJI_CODE = re.compile(r":\S*?:")
_COLON = re.compile(r"(\\*):")


def markup_safe(text: object) -> str:
    """:func:`visible`, then Rich markup escaped, emoji codes included: safe to embed in a Rich/Textual
    markup string (followed by a tag it shows exactly; a trailing backslash, doubled so that it cannot
    escape that tag, shows twice when nothing follows)."""
    shown = _BEFORE_PLAIN_BRACKET.sub(lambda m: m.group(1) + "\\", visible(text))
    shown = _TRAILING_BACKSLASHES.sub(lambda m: m.group(1) * 2, shown)
    safe = escape(shown)
    if _EMOJI_CODE.search(safe):
        safe = _COLON.sub(lambda m: f"[none]{m.group(1)}:[/none]", safe)
    return safe


def is_clean(text: str) -> bool:
    """True when ``text`` holds no character :func:`visible` would escape."""
    return _UNSAFE.search(text) is None


def json_text(value: object, **options: Any) -> str:
    """``json.dumps(value, ensure_ascii=False, **options)`` with every character :func:`visible` would escape
    written as a ``\\uXXXX`` escape: the same JSON, with readable non-ASCII text, nothing in it that acts on
    a terminal and nothing that fails to encode (a non-UTF-8 file name's lone surrogates)."""
    text = json.dumps(value, ensure_ascii=False, **options)
    return _UNSAFE_IN_JSON.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def shell_quoted(text: str) -> str:
    """``text`` unchanged when :func:`is_clean`, else as bash's ``$'...'`` quoting, every byte of a character
    :func:`visible` would escape written ``\\xNN`` (a non-UTF-8 name's own bytes): pasted into a shell it
    names the exact file, where no plain text could (a clipboard holds text)."""
    if is_clean(text):
        return text
    out: list[str] = []
    for ch in text:
        if _UNSAFE.match(ch):
            raw = ch.encode("utf-8", "surrogateescape" if "\udc80" <= ch <= "\udcff" else "surrogatepass")
            out.extend(f"\\x{b:02x}" for b in raw)
        else:
            out.append("\\" + ch if ch in "\\'" else ch)
    return "$'" + "".join(out) + "'"
