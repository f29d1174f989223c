"""Untrusted text never reaches a terminal raw: controls, surrogates, bidi overrides and Rich markup."""

from __future__ import annotations

import io
import json
import shlex
import shutil
import subprocess

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from rich.console import Console
from rich.text import Text

from core.safe_text import is_clean, json_text, markup_safe, shell_quoted, visible

ATTACKS = [
    "\x1b[2J\x1b[H",  # clear screen, cursor home
    "\x1b]0;owned\x07",  # set the window title
    "\x1b]8;;http://evil.example/\x1b\\click\x1b]8;;\x1b\\",  # OSC 8 hyperlink
    "\x1b[5A\x1b[10C",  # cursor moves
    "\x9b2J",  # C1 CSI
    "line\rover",  # carriage return overwrite
    "abc\u202eexe.jpg",  # right-to-left override
    "caf\udce9.jpg",  # a non-UTF-8 file name decoded with surrogateescape
]


def test_every_attack_is_shown_not_obeyed():
    for attack in ATTACKS:
        shown = visible(attack)
        assert is_clean(shown), repr(shown)
        assert "\x1b" not in shown and "\x07" not in shown and "\r" not in shown
    assert visible("\x1b[2J") == "\\x1b[2J"
    assert visible("caf\udce9") == "caf\\udce9"


def test_rich_markup_in_data_is_printed_literally():
    caption = "[link=http://evil.example]a dog[/link] [bold red]on fire[/]"
    out = io.StringIO()
    Console(file=out, force_terminal=True, highlight=False, width=200).print(markup_safe(caption))
    text = out.getvalue()
    assert "[link=http://evil.example]a dog[/link]" in text
    assert "\x1b]8;" not in text  # no hyperlink was emitted


def test_emoji_codes_in_data_are_printed_literally_by_rich_and_textual():
    from textual.content import Content

    caption = "a dog :smile: at 10:30, \\:V:"
    out = io.StringIO()
    Console(file=out, highlight=False, width=200).print(f"[b]{markup_safe(caption)}[/b]")
    assert out.getvalue() == caption + "\n"
    content = Content.from_markup(f"[b]{markup_safe(caption)}[/b]")
    assert content.plain == caption
    assert markup_safe("no code: here") == "no code: here"  # a lone colon stays as it is


def test_printable_text_is_unchanged():
    caption = "A black dog runs on the beach – très bien, 犬 🐕 [sic] (50%) \\x1b"
    assert visible(caption) == caption
    assert Text.from_markup(markup_safe(caption)).plain == caption


@given(st.text())
def test_output_is_always_clean_and_encodable(text):
    shown = visible(text)
    assert is_clean(shown)
    shown.encode("utf-8")  # never a lone surrogate
    assert visible(shown) == shown  # idempotent


@example("\\")
@example(":V:")  # an emoji code: Rich shows a victory hand unless it is broken up
@example("a\\:smile:\\:V:V:")
@example("a\\[b]")
@example("\\[ a")  # a backslash before a bracket that opens no tag
@example("a\\\\\\")  # three trailing backslashes, which must not escape the tag after them
@given(
    st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cs", "Cf")))
    | st.text(alphabet="\\[]/ab#@ =:V")
)
def test_text_without_controls_passes_through(text):
    assert visible(text) == text.replace("\t", " ")
    # markup_safe text is embedded in markup: followed by a tag it shows exactly (Rich doubles a trailing
    # backslash so that it cannot escape the tag after it; alone, that backslash then shows twice)
    assert Text.from_markup(markup_safe(text) + "[b]x[/b]").plain == text + "x"
    assert Text.from_markup("[i]" + markup_safe(text) + "[/i]").plain == text
    if not text.endswith("\\"):
        assert Text.from_markup(markup_safe(text)).plain == text


@given(
    st.recursive(st.text() | st.integers(), lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner))
)
def test_json_text_means_the_same_json_and_shows_nothing_raw(value):
    text = json_text(value, indent=2)
    assert json.loads(text) == value
    text.encode("utf-8")  # lone surrogates (non-UTF-8 file names) are escaped, not left to fail
    assert is_clean(text.replace("\n", ""))  # only the indentation's newlines are raw


def test_json_text_keeps_readable_text_and_escapes_attacks():
    assert json_text(["très 犬", *ATTACKS]) == (
        '["très 犬", "\\u001b[2J\\u001b[H", "\\u001b]0;owned\\u0007", '
        '"\\u001b]8;;http://evil.example/\\u001b\\\\click\\u001b]8;;\\u001b\\\\", "\\u001b[5A\\u001b[10C", '
        '"\\u009b2J", "line\\rover", "abc\\u202eexe.jpg", "caf\\udce9.jpg"]'
    )


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_shell_quoting_gives_a_shell_the_exact_bytes_of_a_name():
    names = [*ATTACKS, "it's a \\ dir/x.jpg", "plain é 犬.jpg"]
    quoted = [shell_quoted(n) for n in names]
    assert quoted[-2:] == names[-2:]  # plain text stays as it is
    assert shell_quoted("it's\x1b") == "$'it\\'s\\x1b'"
    assert shell_quoted("caf\udce9.jpg") == "$'caf\\xe9.jpg'"
    words = [q if q.startswith("$'") else shlex.quote(q) for q in quoted]
    script = "\n".join(f"printf '%s\\0' {word}" for word in words)
    out = subprocess.run(["bash", "-c", script], capture_output=True, check=True).stdout
    assert out.split(b"\0")[:-1] == [n.encode("utf-8", "surrogateescape") for n in names]
    assert all(is_clean(q) for q in quoted)


@given(st.text(alphabet=st.characters() | st.characters(categories=["Cs"])))  # lone surrogates included
def test_shell_quoting_is_clean_for_any_text(text):
    assert is_clean(shell_quoted(text))
