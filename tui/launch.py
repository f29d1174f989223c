"""Opening the terminal app: what ``capsearch app`` runs once its options are parsed."""

from __future__ import annotations

import argparse
import os

from tui.session import Source


def run_app(args: argparse.Namespace) -> int:
    """Run the app on the source named by ``capsearch app``'s parsed options until the user quits;
    ``args.preview`` forces an image preview protocol."""
    if args.preview:  # read when the preview widget is imported, before Textual starts
        os.environ["CAPSEARCH_PREVIEW"] = args.preview
    from tui.app import CapsearchApp

    library = getattr(args, "library", None)
    if library is None and args.dataset is None and args.model is None:
        from tui.library_session import default_library_name

        library = default_library_name()  # once a library exists it is the default; else the demo
    source = Source(
        dataset=args.dataset,
        model=args.model,
        pretrained=args.pretrained,
        split=args.split,
        index=args.index,
        library=library,
    )
    CapsearchApp(source).run()
    return 0
