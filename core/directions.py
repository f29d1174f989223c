"""The retrieval directions, one :class:`Direction` enum for the three spellings found in files and commands.

The value is the spelling of results files (``text_to_image``); :attr:`Direction.cli` is the spelling of
command options and search output (``text-image``), :attr:`Direction.short` that of compact metric keys
(``t2i``) and :attr:`Direction.label` the one people read (``text → image``).
"""

from __future__ import annotations

from enum import StrEnum


class Direction(StrEnum):
    """What is searched with what: ``<query side>_to_<result side>``."""

    TEXT_TO_IMAGE = "text_to_image"
    IMAGE_TO_TEXT = "image_to_text"
    IMAGE_TO_IMAGE = "image_to_image"
    TEXT_TO_TEXT = "text_to_text"

    @property
    def query(self) -> str:
        """``text`` or ``image``: what the query is."""
        return self.value.split("_to_")[0]

    @property
    def target(self) -> str:
        """``text`` or ``image``: what the results are."""
        return self.value.split("_to_")[1]

    @property
    def cli(self) -> str:
        """The command-line spelling: ``text-image``."""
        return f"{self.query}-{self.target}"

    @property
    def short(self) -> str:
        """The compact spelling of metric keys: ``t2i``."""
        return f"{self.query[0]}2{self.target[0]}"

    @property
    def label(self) -> str:
        """The spelling people read: ``text → image``."""
        return f"{self.query} → {self.target}"

    @classmethod
    def from_cli(cls, spelling: str) -> Direction:
        """The direction spelt ``text-image`` (ValueError for any other spelling)."""
        for direction in cls:
            if direction.cli == spelling:
                return direction
        raise ValueError(f"unknown direction {spelling!r}")


EVALUATED: tuple[Direction, Direction] = (Direction.TEXT_TO_IMAGE, Direction.IMAGE_TO_TEXT)
"""The two directions Recall@K is measured in."""
