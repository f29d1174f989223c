"""``capsearch app``: its options, and the seam through which the core's CLI opens the terminal app.

The core never imports the app: the app registers its launcher as the ``capsearch.app`` entry point
(pyproject's ``[project.entry-points]``) and ``capsearch app`` runs whatever is registered there, so another
front end could take its place and an install without one says so. Parsing these options imports neither
the other commands' modules (numpy, faiss, ...) nor Textual, so ``capsearch app`` starts as fast as the app
itself can.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from importlib.metadata import entry_points

from rich_argparse import RawDescriptionRichHelpFormatter

from core.errors import CapsearchError

APP_ENTRY_POINTS = "capsearch.app"  # group of the terminal app's launcher: run(args) -> exit status

APP_HELP = "open the terminal app (default: the built-in demo)"
APP_DESCRIPTION = """\
Open the terminal app: search by text or by image, browse a dataset, run evaluations and fine-tune.

With no options it opens the built-in demo: synthetic captioned scenes and the compact model trained on
them. The first start prepares and trains both (progress is shown in the app, a few minutes on a CPU);
later starts reuse them and take seconds.

Examples:
  capsearch app                                        # the built-in demo
  capsearch prepare flickr8k /path/to/flickr8k         # once: Flickr8k as a prepared dataset
  capsearch app --dataset flickr8k                     # with the newest model trained on it
  capsearch app --dataset flickr8k --model compact-flickr8k
  capsearch prepare folder ~/Pictures --name photos    # once: your own photos (an uncaptioned gallery)
  capsearch app --dataset photos --model compact-flickr8k
  capsearch app --dataset flickr8k --model ViT-B-32 --pretrained openai
                                                       # real CLIP weights: needs them in the open_clip cache
                                                       # (or give a local .pt/.safetensors file path)

--model takes a trained model (the name of a folder under artifacts/models, e.g. compact-flickr8k from
scripts/train_compact_flickr8k.py, or any checkpoint folder's path), a capsearch config such as
capsearch-compact-scratch (random init), or an open_clip name with --pretrained. Inside the app: F1 lists
every key, Ctrl+P searches every action, Ctrl+O opens another dataset or model.

Image previews use the best protocol the terminal supports (Kitty, Sixel), colored half cells elsewhere
(e.g. tmux); --preview (or CAPSEARCH_PREVIEW) forces one where a terminal misreports its support.
"""

# "auto" and the keys of tui.widgets.image_preview.PREVIEW_MODES, spelled out so that parsing arguments
# imports no textual-image (tests/tui/test_tui_entry.py keeps the two in step).
PREVIEW_CHOICES = ("auto", "kitty", "sixel", "halfcell", "unicode")


def add_app_arguments(app: argparse.ArgumentParser) -> None:
    app.add_argument(
        "--dataset",
        help="a prepared dataset's name or folder (default: the default photo library, else the demo dataset)",
    )
    app.add_argument("--library", help="a photo library to search (`capsearch library list`)")
    app.add_argument(
        "--model",
        help="model name, checkpoint folder or open_clip name (default: the newest model trained on the "
        "dataset, else the demo model)",
    )
    app.add_argument("--pretrained", help="open_clip weights tag (e.g. openai) or a local weights file")
    app.add_argument(
        "--split", default="test", choices=("train", "val", "test"), help="split to search (default: test)"
    )
    app.add_argument(
        "--index",
        default="auto",
        choices=("auto", "exact", "hnsw"),
        help="index kind (default: auto by size)",
    )
    app.add_argument(
        "--preview",
        choices=PREVIEW_CHOICES,
        help="image preview protocol (default: auto, the best the terminal supports)",
    )


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``app`` to the full parser (so that ``capsearch --help`` lists it)."""
    from core.cli.console import add_command

    app = add_command(
        sub,
        "app",
        open_app,
        help=APP_HELP,
        description=APP_DESCRIPTION,
        formatter_class=RawDescriptionRichHelpFormatter,
    )
    add_app_arguments(app)


def app_parser() -> argparse.ArgumentParser:
    """``capsearch app`` on its own, parsed without the other commands' modules."""
    app = argparse.ArgumentParser(
        prog="capsearch app", description=APP_DESCRIPTION, formatter_class=RawDescriptionRichHelpFormatter
    )
    add_app_arguments(app)
    return app


def launcher() -> Callable[[argparse.Namespace], int]:
    """The terminal app's launcher, from its ``capsearch.app`` entry point."""
    found = list(entry_points(group=APP_ENTRY_POINTS))
    if not found:
        raise CapsearchError(
            "no terminal app is installed (nothing registers the capsearch.app entry point)",
            hint="reinstall capsearch from its checkout: `pip install -e .`",
        )
    run: Callable[[argparse.Namespace], int] = found[0].load()
    return run


def open_app(args: argparse.Namespace) -> int:
    """Run the terminal app until the user quits."""
    return launcher()(args)
