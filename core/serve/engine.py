"""The served model and index: loaded in the background, searched from many request threads.

:class:`Engine` owns one :class:`~core.search.retriever.Retriever` (swapped whole when the index files
change on disk, see :meth:`Engine.watch`), the :class:`~core.serve.batcher.ModelThread` every forward
pass goes through, and two LRUs: query embeddings keyed by (model id, text) and result lists keyed by
(model id, index version, query, parameters); the index version is part of the key, so a rebuilt index
never answers from the old one's results.
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
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np

from core.data.images import load_rgb_bytes
from core.data.records import PreparedDataset, load_dataset
from core.directions import Direction
from core.embed.engine import encode_pil_query, encode_text_queries
from core.embed.heap import share_one_arena
from core.errors import CapsearchError, ModelError
from core.index.store import IndexKey, Side
from core.index.vector_index import VectorIndex
from core.models.catalogue import default_model, is_checkpoint_dir
from core.models.loading import LoadedModel, load_model
from core.progress import Reporter
from core.search.retriever import Hit, Retriever
from core.serve.batcher import ModelThread
from core.serve.cache import LRU
from core.serve.errors import NotFound, NotReady, ServiceError
from core.serve.metrics import Metrics
from core.serve.settings import Settings

log = logging.getLogger("capsearch.serve")
TARGETS = {"images": ("image",), "captions": ("text",), "both": ("image", "text")}


@dataclass(frozen=True)
class Query:
    """One search query: ``kind`` is text, image (decoded upload bytes), image_id or embedding."""

    kind: str
    text: str = ""
    data: bytes = b""
    vector: tuple[float, ...] = ()

    @property
    def key(self) -> tuple[str, str]:
        """What identifies the query in the result cache (uploads and vectors by their digest)."""
        if self.kind in ("text", "image_id"):
            return self.kind, self.text
        raw = self.data if self.kind == "image" else np.asarray(self.vector, dtype=np.float32).tobytes()
        return self.kind, hashlib.sha256(raw).hexdigest()


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


def preflight(settings: Settings) -> tuple[PreparedDataset, LoadedModel] | None:
    """Check and load what can fail fast before the server starts (None for the demo, made later)."""
    if settings.dataset is None:
        return None
    data = load_dataset(settings.dataset)
    data.split(settings.split)  # a missing split fails here, not in the background
    lm = load_model(resolve_model(settings, data), settings.pretrained, settings.device, settings.precision)
    return data, lm


class Engine:
    """See the module docstring. Call :meth:`start` (background load) and :meth:`close`."""

    def __init__(
        self, settings: Settings, metrics: Metrics, loaded: tuple[PreparedDataset, LoadedModel] | None = None
    ):
        share_one_arena()  # it loads, embeds and encodes in threads: let them reuse freed memory too
        self.settings = settings
        self.metrics = metrics
        self._loaded = loaded
        self.retriever: Retriever | None = None
        self.worker: ModelThread | None = None
        self.version = ""
        self.failure: str | None = None
        self.on_failure: Callable[[str], None] | None = None
        self.embeddings: LRU[np.ndarray] = LRU(settings.embedding_cache)
        self.results: LRU[dict[str, Any]] = LRU(settings.result_cache)
        self.thumbnails: LRU[bytes] = LRU(settings.thumbnail_cache)
        self._progress = _Progress()
        self._stop = threading.Event()
        self._start_lock = threading.Lock()
        self._started = False
        self._signature: tuple[int, ...] = ()
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
        """Load (or, for the demo, prepare and train first) the model and index; blocks."""
        self._started = True
        s = self.settings
        if self._loaded is None:
            if s.dataset is None:
                from core.demo import ensure_demo

                data, model_dir = ensure_demo(self._progress)
                model = s.model or model_dir
            else:
                data = load_dataset(s.dataset)
                model = resolve_model(s, data)
            lm = load_model(model, s.pretrained, s.device, s.precision)
        else:
            data, lm = self._loaded
        retriever = Retriever.open(data, lm, split=s.split, index=s.index, reporter=self._progress)
        self.worker = ModelThread(
            lambda texts: encode_text_queries(lm, texts), self.metrics, s.batch_window_ms / 1000, s.max_batch
        )
        self._swap(retriever)

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

    def _swap(self, retriever: Retriever) -> None:
        self.version = index_version(retriever)
        self._signature = index_signature(retriever)
        self.retriever = retriever
        self.results.clear()
        if self.settings.freeze_heap:
            gc.collect()
            gc.freeze()
        self.metrics.ready.set(1)

    def watch(self) -> None:
        """Every ``reload_check_s``: when the index files changed on disk, reopen them and swap (a failed
        reopen, e.g. a rebuild still being written, is logged and tried again next time)."""
        while not self._stop.wait(self.settings.reload_check_s):
            try:
                self.reload_if_changed()
            except Exception as exc:  # the service keeps answering from the index it has
                log.warning("reopening the rebuilt index failed: %s", exc)

    def reload_if_changed(self) -> bool:
        """Reopen the retriever when its index files changed (a rebuild); True if it did."""
        current = self.retriever
        if current is None or index_signature(current) == self._signature:
            return False
        s = self.settings
        self._swap(Retriever.open(current.data, current.lm, split=s.split, index=s.index))
        return True

    def close(self) -> None:
        self._stop.set()
        if self.worker is not None:
            self.worker.close()

    @property
    def reason(self) -> str | None:
        """Why the engine is not ready (None once it is)."""
        if self.failure is not None:
            return f"failed: {self.failure}"
        return None if self.retriever is not None else f"loading ({self._progress.line})"

    def ready(self) -> Retriever:
        if self.retriever is None:
            raise NotReady(f"the service is not ready: {self.reason}", hint="poll GET /readyz")
        return self.retriever

    # -- encoding ---------------------------------------------------------------------------------------
    def encode_text(self, text: str) -> np.ndarray:
        """A text's embedding (see :meth:`encode_texts`)."""
        return self.encode_texts([text])[0]

    def encode_texts(self, texts: list[str]) -> list[np.ndarray]:
        """Texts' embeddings from the LRU, else from the micro-batcher (all submitted before waiting)."""
        r, worker = self.ready(), self.worker
        assert worker is not None
        for text in texts:
            if not text.strip():
                raise CapsearchError(
                    "the text query is empty", hint='type a description, e.g. "a dog in the snow"'
                )
        found = [self.embeddings.get((r.model_id, text)) for text in texts]
        for vector in found:
            self.metrics.cache.labels("embedding", "miss" if vector is None else "hit").inc()
        futures = {i: worker.encode_text(texts[i]) for i, vector in enumerate(found) if vector is None}
        for i, future in futures.items():
            vector = future.result()
            self.embeddings.put((r.model_id, texts[i]), vector)
            found[i] = vector
        return [v for v in found if v is not None]

    def encode_image(self, data: bytes, name: str = "upload") -> np.ndarray:
        r, worker = self.ready(), self.worker
        assert worker is not None
        image = load_rgb_bytes(data, name)
        start = time.perf_counter()
        vector: np.ndarray = worker.call(lambda: encode_pil_query(r.lm, image)).result()
        self.metrics.encode.labels("image").observe(time.perf_counter() - start)
        return vector

    def query_vector(self, r: Retriever, query: Query) -> np.ndarray:
        if query.kind == "text":
            return r.query_vector(query.text, encode_text=self.encode_text, files=False)
        if query.kind == "image":
            return self.encode_image(query.data)
        if query.kind == "image_id":
            if not r.has_id(query.text):
                raise NotFound(f"no image with id {query.text!r} in {r.dataset}/{r.split}")
            return r.image_vector(query.text)
        return normalised(query.vector, r.lm.embed_dim)

    # -- search -----------------------------------------------------------------------------------------
    def cached(self, query: Query, direction: str, k: int, min_score: float | None) -> dict[str, Any] | None:
        """The response body of a search from the result cache, or None (cheap: the event loop calls it
        before handing a miss to a request thread)."""
        r = self.ready()
        start = time.perf_counter()
        cached = self.results.get((r.model_id, self.version, query.key, direction, k, min_score))
        self.metrics.cache.labels("result", "miss" if cached is None else "hit").inc()
        return None if cached is None else {**cached, "cached": True, "timings": _timings(start, 0.0, 0.0)}

    def search(
        self, query: Query, direction: str, k: int, min_score: float | None, lookup: bool = True
    ) -> dict[str, Any]:
        """The response body of a search (see :class:`core.serve.schemas.SearchResponse`); ``lookup=False``
        when :meth:`cached` was just asked."""
        r = self.ready()
        start = time.perf_counter()
        key = (r.model_id, self.version, query.key, direction, k, min_score)
        hit = self.cached(query, direction, k, min_score) if lookup else None
        if hit is not None:
            return hit
        assert self.worker is not None
        with self.worker.enter():
            vector = self.query_vector(r, query)
        encoded = time.perf_counter()
        lists = [_hits(r.search_vector(vector, t, k), min_score) for t in TARGETS[direction]]
        searched = time.perf_counter()
        self.metrics.search.observe(searched - encoded)
        body = {
            "model_id": r.model_id,
            "dataset": r.dataset,
            "split": r.split,
            "query_kind": query.kind,
            "direction": direction,
            "index": r.index_kind_of(
                Direction.TEXT_TO_IMAGE if direction != "captions" else Direction.TEXT_TO_TEXT
            ),
            "k": k,
            "hits": lists[0],
            "caption_hits": lists[1] if len(lists) > 1 else None,
        }
        self.results.put(key, body)
        return {**body, "cached": False, "timings": _timings(start, encoded - start, searched - encoded)}

    def etag(self, query: Query, direction: str, k: int, min_score: float | None) -> str:
        """A strong validator of a search's hits: they change only with the model or the index."""
        r = self.ready()
        raw = json.dumps([r.model_id, self.version, list(query.key), direction, k, min_score])
        return '"' + hashlib.sha256(raw.encode()).hexdigest()[:32] + '"'


def normalised(values: tuple[float, ...], dim: int) -> np.ndarray:
    with np.errstate(over="ignore"):  # a value past float32's range becomes inf, refused below
        vector = np.asarray(values, dtype=np.float32)
    if vector.shape != (dim,):
        raise ServiceError(f"the embedding has {vector.size} values; the model's dimension is {dim}")
    norm = float(np.linalg.norm(vector)) if np.isfinite(vector).all() else float("nan")
    if not np.isfinite(norm) or norm < 1e-12:
        raise ServiceError("the embedding must be finite and not all zero")
    return vector / norm


def _hits(hits: list[Hit], min_score: float | None) -> list[dict[str, Any]]:
    out = []
    for hit in hits:
        if min_score is not None and hit.score < min_score:
            continue
        d = hit.to_dict()
        del d["path"]
        url = quote(hit.record.id, safe="")
        out.append({**d, "image_url": f"/v1/images/{url}", "thumbnail_url": f"/v1/thumbnails/{url}?size=256"})
    return out


def _timings(start: float, encode_s: float, search_s: float) -> dict[str, float]:
    total = time.perf_counter() - start
    return {
        "encode_ms": round(encode_s * 1e3, 3),
        "search_ms": round(search_s * 1e3, 3),
        "total_ms": round(total * 1e3, 3),
    }


def index_version(r: Retriever) -> str:
    """The content of the served indexes: the model id and the digests their metadata records."""
    parts = [r.model_id, r.image_index.kind, str(r.image_index.meta.get("vectors_sha256"))]
    parts.append(str(r.image_index.meta.get("faiss_sha256")))
    if r.caption_index is not None:
        parts += [
            str(r.caption_index.meta.get("vectors_sha256")),
            str(r.caption_index.meta.get("faiss_sha256")),
        ]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def index_files(r: Retriever) -> list[Path]:
    """The metadata files of the served indexes (a rebuild replaces them)."""
    out = []
    sides: list[tuple[Side, VectorIndex | None]] = [("images", r.image_index), ("captions", r.caption_index)]
    for side, index in sides:
        if index is not None:
            out.append(
                IndexKey(r.model_id, r.dataset, r.split, side, r.lm.precision).folder(index.spec)
                / "index.json"
            )
    return out


def index_signature(r: Retriever) -> tuple[int, ...]:
    """Modification times of the served index files."""
    return tuple(p.stat().st_mtime_ns if p.exists() else 0 for p in index_files(r))
