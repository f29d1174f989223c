"""Search: rclip-style query arithmetic (:mod:`core.search.query`) and the :class:`~core.search.retriever.Retriever`
facade (:mod:`core.search.retriever`, which loads models, so it is not imported here)."""

from core.search.query import QueryError, QueryTerm, parse_query

__all__ = ["QueryError", "QueryTerm", "parse_query"]
