"""Opening the terminal app: what ``capsearch app`` runs once its options are parsed."""

from __future__ import annotations

import os

from tui.session import Source


def run_app(
    *,
    dataset: str | None,
    model: str | None,
    pretrained: str | None,
    split: str,
    index: str,
    preview: str | None,
) -> int:
    """Run the app on ``Source(dataset, model, ...)`` until the user quits; ``preview`` forces an image
    preview protocol."""
    if preview:  # read when the preview widget is imported, before Textual starts
        os.environ["CAPSEARCH_PREVIEW"] = preview
    from tui.app import CapsearchApp

    CapsearchApp(Source(dataset=dataset, model=model, pretrained=pretrained, split=split, index=index)).run()
    return 0
