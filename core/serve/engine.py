"""The served model and collection: loaded in the background, searched from many request threads.

:class:`Engine` owns one :class:`Loaded`: the :class:`~core.serve.served.Served` collection (a dataset split
or a photo library, reopened or caught up when it changes on disk, see :meth:`Engine.watch`) and the
:class:`~core.serve.batcher.ModelThread` every forward pass of its model goes through. A request takes the
current one once, so a swap never mixes two models in one answer. Two LRUs: query embeddings keyed by
(model id, text) and result lists keyed by (model id, collection version, query, parameters); the version
is part of the key, so a changed collection never answers from the old one's results.
"""

from __future__ import annotations

import base64
import binascii
import gc
import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from core.data.images import load_rgb_bytes
from core.data.records import PreparedDataset, load_dataset
from core.embed.engine import encode_pil_query, encode_text_queries
from core.embed.heap import share_one_arena
from core.errors import CapsearchError, ModelError
from core.models.catalogue import default_model, is_checkpoint_dir
from core.models.loading import load_model
from core.progress import Reporter
from core.serve.batcher import ModelThread
from core.serve.cache import LRU
from core.serve.dataset import ServedDataset
from core.serve.errors import NotReady, ServiceError
from core.serve.library import ServedLibrary
from core.serve.metrics import Metrics
from core.serve.schemas import SearchForm
from core.serve.served import Opener, Query, Served
from core.serve.settings import Settings

log = logging.getLogger("capsearch.serve")


def decode_base64(text: str, what: str = "image_base64") -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ServiceError(f"{what} is not valid base64 ({exc})") from exc


class _Progress(Reporter):
    """Keeps the latest progress line, which ``/readyz`` reports while loading."""

    def __init__(self) -> None:
        super().__init__()
        self.line = "starting"

    def update(self, stage: str, done: int, total: int | None = None, **info: Any) -> None:
        self.line = f"{stage}: {done}/{total}" if total is not None else f"{stage}: {done}"

    def log(self, message: str) -> None:
        self.line = message


def resolve_model(settings: Settings, data: PreparedDataset) -> str:
    """``settings.model``, else the newest model trained on the dataset (which must exist)."""
    if settings.model:
        return settings.model
    path = default_model(data.name)
    if not is_checkpoint_dir(path):
        raise ModelError(
            f"no --model given and no model trained on {data.name!r} (nor the demo model) exists",
            hint="pass --model NAME (e.g. ViT-B-32 or a folder under artifacts/models)",
        )
    return str(path)


def preflight(settings: Settings) -> Opener | None:
    """Check and load what can fail fast before the server starts: the dataset, its split and the model,
    or the library and its model (None for the demo, made later)."""
    s = settings
    if s.library is not None:
        from core.library.home import resolve_library
        from core.library.library import Library

        with Library.open(resolve_library(s.library)) as lib:
            model, name = lib.embedded_model(), lib.name
        lm = load_model(model.name, device=s.device, precision=model.precision)
        return ServedLibrary.opener(name, s.device, lm)
    if s.dataset is None:
        return None
    data = load_dataset(s.dataset)
    data.split(s.split)  # a missing split fails here, not in the background
    lm = load_model(resolve_model(s, data), s.pretrained, s.device, s.precision)
    return ServedDataset.opener(data, lm, s.split, s.index)


@dataclass(frozen=True)
class Loaded:
    """What a request searches: the collection and the thread its model runs on."""

    served: Served
    worker: ModelThread

    @property
    def model_id(self) -> str:
        return self.served.model_id


class Engine:
    """See the module docstring. Call :meth:`start` (background load) and :meth:`close`."""

    def __init__(self, settings: Settings, metrics: Metrics, opener: Opener | None = None):
        share_one_arena()  # it loads, embeds and encodes in threads: let them reuse freed memory too
        self.settings = settings
        self.metrics = metrics
        self._opener = opener
        self.loaded: Loaded | None = None
        self._retired: Loaded | None = None
        self.failure: str | None = None
        self.on_failure: Callable[[str], None] | None = None
        self.embeddings: LRU[np.ndarray] = LRU(settings.embedding_cache)
        self.results: LRU[dict[str, Any]] = LRU(settings.result_cache)
        self.thumbnails: LRU[bytes] = LRU(settings.thumbnail_cache)
        self._progress = _Progress()
        self._stop = threading.Event()
        self._start_lock = threading.Lock()
        self._swap_lock = threading.Lock()
        self._started = False
        metrics.cache_hit_ratio.labels("embedding").set_function(lambda: self.embeddings.hit_rate)
        metrics.cache_hit_ratio.labels("result").set_function(lambda: self.results.hit_rate)

    # -- loading ----------------------------------------------------------------------------------------
    def start(self) -> None:
        """Load in a background thread (once: later calls do nothing)."""
        with self._start_lock:
            if self._started:
                return
            self._started = True
        threading.Thread(target=self._load_safely, name="capsearch-load", daemon=True).start()

    def load(self) -> None:
        """Open the collection (for the demo, prepare and train first); blocks."""
        self._started = True
        opener = self._opener
        if opener is None:
            s = self.settings
            if s.library is not None or s.dataset is not None:
                opener = preflight(s)
            else:
                from core.demo import ensure_demo

                data, model_dir = ensure_demo(self._progress)
                opener = ServedDataset.opener(
                    data,
                    load_model(s.model or model_dir, s.pretrained, s.device, s.precision),
                    s.split,
                    s.index,
                )
        assert opener is not None
        self._swap(opener(self._progress))

    def _load_safely(self) -> None:
        try:
            self.load()
        except CapsearchError as err:
            self._fail(str(err))
        except Exception as exc:  # any failure to load must end the server with one line, not hang it
            self._fail(f"{type(exc).__name__}: {exc}")
        else:
            if self.settings.reload_check_s > 0:
                threading.Thread(target=self.watch, name="capsearch-watch", daemon=True).start()

    def _fail(self, reason: str) -> None:
        self.failure = reason
        if self.on_failure is not None:
            self.on_failure(reason)

    def _swap(self, served: Served) -> None:
        """Serve ``served`` from now on: on the current model thread when the model is the same, else on a new
        one. What it replaces is closed at the next swap (or at :meth:`close`), by when the requests that
        took it have long finished."""
        with self._swap_lock:
            current = self.loaded
            if current is not None and current.served.lm is served.lm:
                worker = current.worker
            else:
                s, lm = self.settings, served.lm
                encode = lambda texts: encode_text_queries(lm, texts)  # noqa: E731
                worker = ModelThread(encode, self.metrics, s.batch_window_ms / 1000, s.max_batch)
            loaded = Loaded(served, worker)
            if self._retired is not None:
                _release(self._retired, current, loaded)
            self._retired, self.loaded = current, loaded
            self.results.clear()
        if self.settings.freeze_heap:
            gc.collect()
            gc.freeze()
        self.metrics.ready.set(1)

    def watch(self) -> None:
        """Every ``reload_check_s``: when the collection changed on disk, reopen it and swap (a failed
        reopen, e.g. a rebuild still being written, is logged and tried again next time)."""
        while not self._stop.wait(self.settings.reload_check_s):
            try:
                self.reload_if_changed()
            except Exception as exc:  # the service keeps answering from what it has
                log.warning("reopening the changed collection failed: %s", exc)

    def reload_if_changed(self) -> bool:
        """Reopen the collection when it changed on disk (an index rebuilt, a library updated); True if so."""
        current = self.loaded
        if current is None or not current.served.changed():
            return False
        self._swap(current.served.reopen(self._progress))
        return True

    def close(self) -> None:
        self._stop.set()
        with self._swap_lock:
            if self._retired is not None:
                _release(self._retired, self.loaded)
            if self.loaded is not None:
                _release(self.loaded)
            self._retired = None

    @property
    def reason(self) -> str | None:
        """Why the engine is not ready (None once it is)."""
        if self.failure is not None:
            return f"failed: {self.failure}"
        return None if self.loaded is not None else f"loading ({self._progress.line})"

    def ready(self) -> Loaded:
        if self.loaded is None:
            raise NotReady(f"the service is not ready: {self.reason}", hint="poll GET /readyz")
        return self.loaded

    # -- encoding ---------------------------------------------------------------------------------------
    def encode_texts(self, texts: list[str], loaded: Loaded | None = None) -> list[np.ndarray]:
        """Texts' embeddings from the LRU, else from the micro-batcher (all submitted before waiting)."""
        r = loaded or self.ready()
        for text in texts:
            if not text.strip():
                raise CapsearchError(
                    "the text query is empty", hint='type a description, e.g. "a dog in the snow"'
                )
        found = [self.embeddings.get((r.model_id, text)) for text in texts]
        for vector in found:
            self.metrics.cache.labels("embedding", "miss" if vector is None else "hit").inc()
        futures = {i: r.worker.encode_text(texts[i]) for i, vector in enumerate(found) if vector is None}
        for i, future in futures.items():
            vector = future.result()
            self.embeddings.put((r.model_id, texts[i]), vector)
            found[i] = vector
        return [v for v in found if v is not None]

    def encode_image(self, data: bytes, name: str = "upload", loaded: Loaded | None = None) -> np.ndarray:
        r = loaded or self.ready()
        image = load_rgb_bytes(data, name)
        lm = r.served.lm
        start = time.perf_counter()
        vector: np.ndarray = r.worker.call(lambda: encode_pil_query(lm, image)).result()
        self.metrics.encode.labels("image").observe(time.perf_counter() - start)
        return vector

    # -- search -----------------------------------------------------------------------------------------
    def _key(self, r: Loaded, query: Query, params: SearchForm) -> tuple[str, str, tuple[str, str], str]:
        return r.model_id, r.served.version, query.key, params.model_dump_json()

    def cached(self, query: Query, params: SearchForm) -> dict[str, Any] | None:
        """The response body of a search from the result cache, or None (cheap: the event loop calls it
        before handing a miss to a request thread)."""
        r = self.ready()
        r.served.check(params)
        start = time.perf_counter()
        cached = self.results.get(self._key(r, query, params))
        self.metrics.cache.labels("result", "miss" if cached is None else "hit").inc()
        return None if cached is None else {**cached, "cached": True, "timings": _timings(start, 0.0, 0.0)}

    def search(self, query: Query, params: SearchForm, lookup: bool = True) -> dict[str, Any]:
        """The response body of a search (see :class:`core.serve.schemas.SearchResponse`); ``lookup=False``
        when :meth:`cached` was just asked (it also checked ``params``)."""
        r = self.ready()
        start = time.perf_counter()
        key = self._key(r, query, params)  # before searching: a library caught up meanwhile has a new version
        hit = self.cached(query, params) if lookup else None
        if hit is not None:
            return hit
        with r.worker.enter():
            vector = r.served.query_vector(
                query,
                lambda text: self.encode_texts([text], r)[0],
                lambda data: self.encode_image(data, loaded=r),
            )
        encoded = time.perf_counter()
        found = r.served.search(vector, params)
        searched = time.perf_counter()
        self.metrics.search.observe(searched - encoded)
        body = {
            "model_id": r.model_id,
            **found,
            "query_kind": query.kind,
            "direction": params.direction,
            "k": params.k,
        }
        self.results.put(key, body)
        return {**body, "cached": False, "timings": _timings(start, encoded - start, searched - encoded)}

    def etag(self, query: Query, params: SearchForm) -> str:
        """A strong validator of a search's hits: they change only with the model or the collection."""
        r = self.ready()
        raw = json.dumps(self._key(r, query, params))
        return '"' + hashlib.sha256(raw.encode()).hexdigest()[:32] + '"'


def _release(loaded: Loaded, *keep: Loaded | None) -> None:
    """Close a replaced collection and its model thread, each unless one of ``keep`` still uses it."""
    kept = [k for k in keep if k is not None]
    if all(k.served is not loaded.served for k in kept):
        loaded.served.close()
    if all(k.worker is not loaded.worker for k in kept):
        loaded.worker.close()


def _timings(start: float, encode_s: float, search_s: float) -> dict[str, float]:
    total = time.perf_counter() - start
    return {
        "encode_ms": round(encode_s * 1e3, 3),
        "search_ms": round(search_s * 1e3, 3),
        "total_ms": round(total * 1e3, 3),
    }
