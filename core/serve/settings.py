"""What a service runs with: the data and model to serve, limits, and the security options."""

from __future__ import annotations

from dataclasses import dataclass

MAX_BODY_BYTES = 20 * 2**20
MAX_QUERY_CHARS = 1000
MAX_K = 1000


@dataclass(frozen=True)
class Settings:
    """Options of one service: ``library`` names a photo library to serve, else ``dataset`` a dataset, else
    (both None) the built-in demo is served (prepared and trained first).

    ``token``: every endpoint but ``/healthz`` then needs ``Authorization: Bearer <token>``.
    ``cors_origins``: CORS stays off when empty. ``log_queries``: query text goes to the access log.
    ``batch_window_ms``/``max_batch``: the text micro-batcher's collection window and largest batch.
    ``reload_check_s``: how often the collection is checked for a change on disk, an index rebuilt or a
    library updated (0: never).
    ``freeze_heap``: once the model and index are loaded, move every live object out of the cyclic garbage
    collector's reach (``gc.freeze``), so that its full collections stop scanning them (they paused every
    request for 0.2-0.4 s under load); for a server process, not for a test that opens many engines.
    """

    dataset: str | None = None
    library: str | None = None
    model: str | None = None
    pretrained: str | None = None
    split: str = "test"
    index: str = "auto"
    precision: str | None = None
    device: str | None = None
    token: str | None = None
    cors_origins: tuple[str, ...] = ()
    log_queries: bool = False
    max_body_bytes: int = MAX_BODY_BYTES
    batch_window_ms: float = 3.0
    max_batch: int = 32
    embedding_cache: int = 4096
    result_cache: int = 4096
    thumbnail_cache: int = 512
    reload_check_s: float = 10.0
    freeze_heap: bool = False
