"""capsearch core: data preparation, embedding, indexing, evaluation and training.

Nothing here imports Textual or the ``tui`` package: the terminal app is one client of this core,
the CLI and the tests are others.
"""

__version__ = "0.1.0"
