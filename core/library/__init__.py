"""Photo libraries: folders of images catalogued in SQLite and indexed incrementally.

A library is a growing collection (``capsearch library add PATH``): :mod:`~core.library.scan` finds and
reads its files, :mod:`~core.library.catalogue` records them, :mod:`~core.library.vectors` keeps one vector
per content and model, :mod:`~core.library.library` keeps the FAISS index in step with the catalogue, and
:mod:`~core.library.update` brings it all up to date after a change (:mod:`~core.library.watch` on every
file-system event). Searching one is :mod:`core.search.library_search`.
"""
