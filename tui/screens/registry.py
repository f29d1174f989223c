"""The app's top-level screens, in one table: it makes the app's modes and F-keys, the nav bar's tabs and
the help screen's sections, so that adding a screen touches this table only."""

from __future__ import annotations

from dataclasses import dataclass

from tui.screens.base import CapsearchScreen
from tui.screens.browse import BrowseScreen
from tui.screens.duplicates import DuplicatesScreen
from tui.screens.evaluate import EvaluateScreen
from tui.screens.finetune import FinetuneScreen
from tui.screens.search import SearchScreen


@dataclass(frozen=True)
class ScreenSpec:
    """One top-level screen: its mode ``name``, nav-bar ``title``, ``key`` and what it is for (``tooltip``)."""

    name: str
    title: str
    key: str
    tooltip: str
    screen: type[CapsearchScreen]
    extra_keys: tuple[tuple[str, str], ...] = ()
    """(key, what it does) of its widgets' keys, for the help screen (the screen's bindings are read)."""


SCREENS: tuple[ScreenSpec, ...] = (
    ScreenSpec(
        "search",
        "Search",
        "f2",
        "Search by text or by image",
        SearchScreen,
        (
            ("↑ / ↓", "Move through the results (the detail pane follows)"),
            ("enter (on a result)", "Search from this: the image becomes the query"),
            ("← / → (on the switch)", "Change the direction"),
            ("enter (in a filter)", "Apply the library filters now (they also follow typing)"),
            ("esc (in Add folder)", "Cancel the indexing; finished batches are kept"),
        ),
    ),
    ScreenSpec(
        "browse",
        "Browse",
        "f3",
        "Browse a dataset's images",
        BrowseScreen,
        (
            ("↑ / ↓ / pgup / pgdn", "Move through the page"),
            ("enter (on a row)", "Open the image in Search"),
        ),
    ),
    ScreenSpec(
        "evaluate",
        "Evaluate",
        "f4",
        "Run and compare evaluations",
        EvaluateScreen,
        (("enter (on a worst query)", "Open it in Search"),),
    ),
    ScreenSpec("finetune", "Fine-tune", "f5", "Fine-tune a model", FinetuneScreen),
    ScreenSpec(
        "duplicates",
        "Duplicates",
        "f6",
        "Page through groups of near-identical images",
        DuplicatesScreen,
        (("↑ / ↓ (on the list)", "Move through the groups (the previews follow)"),),
    ),
)
