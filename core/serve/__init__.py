"""The HTTP retrieval service behind ``capsearch serve``: a FastAPI app over one :class:`Retriever`.

:mod:`settings` holds what the command line chooses, :mod:`schemas` the request and response models,
:mod:`engine` the loaded model and index (loaded in the background), :mod:`batcher` the one model thread
that micro-batches text queries, :mod:`cache` the LRUs, :mod:`files` the collection's images and
thumbnails, :mod:`middleware` auth, the body cap, metrics and the access log, and :mod:`app` the routes.
"""
