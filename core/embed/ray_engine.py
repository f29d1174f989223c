"""Embedding on a Ray cluster (``capsearch embed --engine ray``): the same vectors as the local engine.

The driver cuts a split into work units with the local engine's batch composition: image units are the
batches :func:`core.embed.cache.split_embeddings` would run (``batch_size`` runs over the rows of the
chunks still to do), caption units are each chunk's captions (encoded, as there, length-bucketed in
``text_batch_size`` batches). Ray Data's ``map_batches`` runs the units on an actor pool, one unit per call
and one model per actor, each actor loading the model itself from its name or path (one GPU per actor
where the cluster has GPUs, else ``cpus_per_actor`` CPUs). Results stream back to the driver, which writes
each chunk in the cache's chunk format (atomically) once all its units are in, then hands the folder to
``split_embeddings``: it finds every chunk done, joins them and completes the manifest, exactly as for an
interrupted local run. An interrupted Ray run therefore resumes from its finished chunks, with either engine.

Ray Data restarts an actor that dies and retries its unit (``max_restarts`` and ``max_task_retries`` are
unbounded for actor pools by default). Every node must see the images and the model at the same paths.
Ray is an optional extra, imported only here: without it every entry point raises :class:`RayMissingError`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from core.atomic import file_sha256, write_json
from core.data.records import ImageRecord, PreparedDataset
from core.embed.cache import (
    DEFAULT_CHUNK,
    Chunks,
    SplitEmbeddings,
    cache_dir,
    clear_cache,
    input_checksum,
    read_manifest,
    split_embeddings,
)
from core.embed.chunks import CAPTION_FILE, FORMAT, IMAGE_FILE, MANIFEST, chunk_file, load_chunk, save_chunk
from core.embed.engine import ImageBatch
from core.errors import CapsearchError, IndexMismatchError
from core.locks import exclusive
from core.models.loading import LoadedModel
from core.paths import models_dir
from core.progress import Reporter, ensure

INSTALL_HINT = "pip install 'capsearch[ray]'"
CONNECT_TIMEOUT_S = 5.0
# How long the pool may take to start every actor; a cluster without room for them fails after it.
WAIT_FOR_ACTORS_S = 600
# Variables the actors need to behave like the driver (offline model loading, the same models folder).
FORWARDED_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "CAPSEARCH_ARTIFACTS")


class RayMissingError(CapsearchError):
    """The Ray engine was asked for but Ray is not installed."""


def import_ray() -> ModuleType:
    """The ``ray`` module (with ``ray.data``), or :class:`RayMissingError` saying how to install it."""
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise RayMissingError(
            f"Ray is not installed: {INSTALL_HINT}",
            hint="or embed with the single-process engine (--engine local, the default)",
        ) from exc
    return ray


# -- what the actors load and run ---------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelSpec:
    """How an actor loads the driver's model: name or absolute path, weights, precision, expected id."""

    name: str
    pretrained: str | None
    precision: str
    model_id: str

    @classmethod
    def of(cls, name: str, pretrained: str | None, lm: LoadedModel) -> ModelSpec:
        """The spec of ``lm`` as loaded from ``name`` and ``pretrained``, local paths made absolute."""
        for candidate in (Path(name).expanduser(), models_dir() / name):
            if candidate.is_dir():
                name = str(candidate.resolve())
                break
        if pretrained and Path(pretrained).expanduser().exists():
            pretrained = str(Path(pretrained).expanduser().resolve())
        return cls(name, pretrained, lm.precision, lm.model_id)


@dataclass(frozen=True)
class RayOptions:
    """Where and how to run. ``address``: None starts a local Ray (``num_cpus`` CPUs, default all), "auto"
    joins the running cluster, else ``host:port``. ``actors``: default one per GPU, else one per
    ``cpus_per_actor`` CPUs of the cluster."""

    address: str | None = None
    num_cpus: int | None = None
    actors: int | None = None
    cpus_per_actor: int = 1
    batch_size: int = 64
    text_batch_size: int = 256
    chunk_size: int = DEFAULT_CHUNK


class UnitEncoder:
    """A Ray Data actor: loads the model once, then encodes one unit (a batch of image paths, or a chunk's
    captions) per call into float32 bytes, with the failed images' ``[position, reason]`` as JSON."""

    def __init__(self, spec: ModelSpec, device: str, threads: int, text_batch_size: int) -> None:
        import torch

        from core.models.loading import load_model

        if device == "cpu":
            torch.set_num_threads(threads)
        self.lm = load_model(spec.name, spec.pretrained, device=device, precision=spec.precision)
        self.text_batch_size = text_batch_size
        self.node = _node_id()

    def encode(self, kind: str, items: list[str]) -> tuple[np.ndarray, list[tuple[int, str]]]:
        from core.embed.engine import encode_images, encode_texts

        if kind == "images":
            return encode_images(self.lm, [Path(p) for p in items], batch_size=len(items), workers=0)
        return encode_texts(self.lm, items, self.text_batch_size), []

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        vectors, failed = [], []
        for kind, payload in zip(batch["kind"].tolist(), batch["payload"].tolist(), strict=True):
            emb, bad = self.encode(str(kind), json.loads(payload))
            vectors.append(np.ascontiguousarray(emb, dtype=np.float32).tobytes())
            failed.append(json.dumps(bad))
        return {
            "unit": batch["unit"],
            "vectors": np.array(vectors, dtype=object),
            "failed": np.array(failed, dtype=object),
            "model_id": np.array([self.lm.model_id] * len(vectors), dtype=object),
            "node": np.array([self.node] * len(vectors), dtype=object),
        }


def _node_id() -> str:
    """The Ray node this process runs on."""
    import ray

    return str(ray.get_runtime_context().get_node_id())


# -- the Ray connection -------------------------------------------------------------------------------------
@contextlib.contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None) -> Iterator[ModuleType]:
    """``ray``, connected: an existing connection is used as it is; else one is opened (to ``address``,
    or a new local Ray with ``num_cpus`` CPUs) and closed on the way out."""
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    where = address or "a new local Ray"
    if address:
        _check_reachable(address)
    try:
        ray.init(
            address=address,
            num_cpus=num_cpus if address is None else None,
            include_dashboard=False,
            logging_level=logging.WARNING,
        )
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as exc:
        reason = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
        raise CapsearchError(
            f"cannot connect to the Ray cluster at {where}: {reason}",
            hint="start one with `ray start --head` and pass its address (or auto) to --address",
        ) from exc
    try:
        yield ray
    finally:
        ray.shutdown()


def _check_reachable(address: str) -> None:
    """Refuse a ``host:port`` nothing listens on at once (Ray itself retries for minutes)."""
    host, _, port = address.rpartition(":")
    if "://" in address or not host or not port.isdigit():
        return  # auto, or a ray:// client address: Ray judges those
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise CapsearchError(
            f"cannot connect to the Ray cluster at {address}: {exc.strerror or exc}",
            hint="check the address (`ray status` on the head prints it) and that the head's port is open",
        ) from exc


def _pool(ray: ModuleType, options: RayOptions) -> tuple[int, dict[str, Any]]:
    """The actor count and each actor's resources: one GPU each where the cluster has GPUs."""
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    if gpus:
        return options.actors or gpus, {"num_gpus": 1, "num_cpus": 1}
    cpus = max(1, int(resources.get("CPU", 1)) // options.cpus_per_actor)
    return options.actors or cpus, {"num_cpus": options.cpus_per_actor}


def run_units(
    ray: ModuleType,
    units: list[dict[str, Any]],
    spec: ModelSpec,
    options: RayOptions,
    encoder: type[UnitEncoder] = UnitEncoder,
) -> Iterator[dict[str, Any]]:
    """Run ``units`` (rows ``unit``, ``kind``, ``payload``) on an actor pool; yield each result row
    (``unit``, ``vectors`` bytes, ``failed`` JSON, ``model_id``) as it arrives, in any order."""
    context = ray.data.DataContext.get_current()
    logging.getLogger("ray.data").setLevel(logging.ERROR)  # its notes on each run; the reporter reports
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    context.wait_for_min_actors_s = WAIT_FOR_ACTORS_S  # all actors up before the first unit: even spread
    actors, resources = _pool(ray, options)
    device = "cuda" if resources.get("num_gpus") else "cpu"
    env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
    dataset = ray.data.from_items(units, override_num_blocks=len(units)).map_batches(
        encoder,
        fn_constructor_kwargs={
            "spec": spec,
            "device": device,
            "threads": options.cpus_per_actor,
            "text_batch_size": options.text_batch_size,
        },
        batch_size=1,
        compute=ray.data.ActorPoolStrategy(size=min(actors, len(units))),
        runtime_env={"env_vars": env} if env else None,
        **resources,
    )
    for row in dataset.iter_rows():
        if row["model_id"] != spec.model_id:
            raise IndexMismatchError(
                f"a Ray worker loaded {row['model_id']}, not {spec.model_id}",
                hint="every node must see the same model files at the same path",
            )
        yield row


# -- a split's cache, chunk by chunk ------------------------------------------------------------------------
@dataclass
class _Plan:
    """A split cut into the cache's chunks, and the chunks still to encode."""

    records: list[ImageRecord]
    captions: list[str]
    chunks: Chunks
    todo: list[int]

    @classmethod
    def of(cls, records: list[ImageRecord], chunk_size: int) -> _Plan:
        captions = [c for r in records for c in r.captions]
        caption_image = np.repeat(np.arange(len(records)), [len(r.captions) for r in records])
        chunks = Chunks.of(len(records), caption_image, chunk_size)
        return cls(records, captions, chunks, list(range(len(chunks.bounds))))

    @property
    def bounds(self) -> list[tuple[int, int]]:
        return self.chunks.bounds

    def caption_rows(self, k: int) -> tuple[int, int]:
        return self.chunks.captions(k)


@dataclass
class _Unit:
    """Where a unit's rows go: image rows of the split, or chunk ``k``'s captions."""

    kind: str
    rows: list[int] = field(default_factory=list)
    chunk: int = -1


def _units(
    plan: _Plan, dataset: PreparedDataset, batch_size: int
) -> tuple[list[dict[str, Any]], list[_Unit]]:
    """The work units of the chunks to do: the local engine's image batches, each followed by the captions
    of the chunks it completes (so chunks complete, and are saved, in order as the run goes)."""
    todo_rows = [i for k in plan.todo for i in range(*plan.bounds[k])]
    waiting = list(plan.todo)
    units: list[_Unit] = []
    for s in range(0, len(todo_rows), batch_size):
        rows = todo_rows[s : s + batch_size]
        units.append(_Unit("images", rows))
        while waiting and plan.bounds[waiting[0]][1] <= rows[-1] + 1:
            k = waiting.pop(0)
            if _span(plan, k):
                units.append(_Unit("captions", chunk=k))
    table = []
    for n, unit in enumerate(units):
        if unit.kind == "images":
            items = [str(dataset.image_path(plan.records[i])) for i in unit.rows]
        else:
            items = plan.captions[slice(*plan.caption_rows(unit.chunk))]
        table.append({"unit": n, "kind": unit.kind, "payload": json.dumps(items)})
    return table, units


class _Assembler:
    """Collects unit results into chunks and writes each chunk once complete (the cache's chunk format)."""

    def __init__(self, plan: _Plan, folder: Path, dim: int, chunk_size: int) -> None:
        self.plan, self.folder, self.dim, self.chunk_size = plan, folder, dim, chunk_size
        self.images: dict[int, np.ndarray] = {}
        self.missing: dict[int, int] = {}
        self.captions: dict[int, np.ndarray] = {}
        self.failed: dict[int, list[tuple[int, str]]] = {}
        for k in plan.todo:
            lo, hi = plan.bounds[k]
            self.images[k] = np.zeros((hi - lo, dim), np.float32)
            self.missing[k] = hi - lo
            first, end = plan.caption_rows(k)
            if end == first:
                self.captions[k] = np.zeros((0, dim), np.float32)
            self.failed[k] = []

    def add(self, unit: _Unit, vectors: np.ndarray, failed: list[tuple[int, str]]) -> list[int]:
        """Take one unit's result; returns the chunks it completed (now written)."""
        if unit.kind == "captions":
            self.captions[unit.chunk] = vectors
            return self._write_complete({unit.chunk})
        touched = set()
        for row, vector in zip(unit.rows, vectors, strict=True):
            k = row // self.chunk_size
            self.images[k][row - self.plan.bounds[k][0]] = vector
            self.missing[k] -= 1
            touched.add(k)
        for pos, reason in failed:
            row = unit.rows[pos]
            k = row // self.chunk_size
            self.failed[k].append((row - self.plan.bounds[k][0], reason))
        return self._write_complete(touched)

    def _write_complete(self, chunks: set[int]) -> list[int]:
        done = [k for k in sorted(chunks) if self.missing[k] == 0 and k in self.captions]
        for k in done:
            self._write(k)
        return done

    def _write(self, k: int) -> None:
        save_chunk(
            chunk_file(self.folder, k), self.images.pop(k), self.captions.pop(k), sorted(self.failed.pop(k))
        )
        del self.missing[k]


def _prepare(folder: Path, stub: dict[str, Any], plan: _Plan, dim: int, reporter: Reporter) -> float | None:
    """Get ``folder`` ready: None when it holds a complete valid cache (reused as it is); else the seconds
    already spent on it, with ``plan.todo`` cut to the chunks an unfinished run of the same inputs lacks
    (a stale or damaged cache is cleared)."""
    manifest = read_manifest(folder) or {}
    same = all(manifest.get(k) == stub[k] for k in ("format", "model_id", "precision", "checksum"))
    if same and manifest.get("complete") and _arrays_match(folder, manifest.get("sha256") or {}):
        return None
    if same and not manifest.get("complete") and manifest.get("chunk_size") == stub["chunk_size"]:
        plan.todo = [
            k
            for k in plan.todo
            if load_chunk(chunk_file(folder, k), plan.bounds[k][1] - plan.bounds[k][0], _span(plan, k), dim)
            is None
        ]
        if len(plan.todo) < len(plan.bounds):
            reporter.log(
                f"resuming: {len(plan.bounds) - len(plan.todo)} of {len(plan.bounds)} chunks already done"
            )
        return float(manifest.get("encode_seconds", 0.0))
    if manifest:
        reporter.log("the embedding cache is stale or damaged; rebuilding it")
    clear_cache(folder)
    return 0.0


def _arrays_match(folder: Path, sha256: dict[str, str]) -> bool:
    try:
        return all(file_sha256(folder / name) == sha256.get(name) for name in (IMAGE_FILE, CAPTION_FILE))
    except OSError:
        return False


def _span(plan: _Plan, k: int) -> int:
    first, end = plan.caption_rows(k)
    return end - first


class _JoinOnly(Reporter):
    """The reporter of the final ``split_embeddings`` call, which must only join the Ray engine's chunks:
    encoding there would mean the cache did not accept them."""

    def __init__(self, parent: Reporter) -> None:
        super().__init__()
        self.parent = parent

    def update(self, stage: str, done: int, total: int | None = None, **info: Any) -> None:
        if stage in ("embed images", "embed captions"):
            raise IndexMismatchError(
                "the embedding cache did not accept the chunks the Ray engine wrote",
                hint="the chunk format changed under the Ray engine; embed with --engine local",
            )
        self.parent.update(stage, done, total, **info)

    def log(self, message: str) -> None:
        if not message.startswith("resuming "):  # every chunk is done: nothing is resumed
            self.parent.log(message)

    def check_cancelled(self) -> None:
        self.parent.check_cancelled()


def ray_split_embeddings(
    lm: LoadedModel,
    spec: ModelSpec,
    dataset: PreparedDataset,
    split: str,
    reporter: Reporter | None = None,
    options: RayOptions | None = None,
    encoder: type[UnitEncoder] = UnitEncoder,
) -> SplitEmbeddings:
    """:func:`core.embed.cache.split_embeddings` with the encoding done on Ray (see the module docstring):
    a valid cache is reused, an unfinished one resumed. ``lm`` (the driver's copy of the model ``spec``
    names) keys the cache; ``encoder`` is the actor class (tests swap in one that dies)."""
    reporter, options = ensure(reporter), options or RayOptions()
    import_ray()
    records = dataset.split(split)
    folder = cache_dir(lm.model_id, dataset.name, split, lm.precision)
    plan = _Plan.of(records, options.chunk_size)
    stub = {
        "format": FORMAT,
        "model_id": lm.model_id,
        "precision": lm.precision,
        "checksum": input_checksum(lm, dataset, records),
        "chunk_size": options.chunk_size,
        "complete": False,
    }
    with exclusive(folder, reporter.log):
        spent = _prepare(folder, stub, plan, lm.embed_dim, reporter)
        if spent is not None and plan.todo:
            _encode_on_ray(plan, dataset, folder, (lm, spec, encoder), options, reporter, stub, spent)
    return split_embeddings(
        lm,
        dataset,
        split,
        _JoinOnly(reporter),
        batch_size=options.batch_size,
        text_batch_size=options.text_batch_size,
        chunk_size=options.chunk_size,
    )


class _Progress:
    """The driver's counts of images, captions and chunks done (earlier runs' chunks included)."""

    def __init__(self, plan: _Plan, units: list[_Unit], reporter: Reporter) -> None:
        self.plan, self.reporter = plan, reporter
        self.images = len(plan.records) - sum(len(u.rows) for u in units)
        self.captions = len(plan.captions) - sum(_span(plan, k) for k in plan.todo)
        self.chunks = len(plan.bounds) - len(plan.todo)
        self.nodes: set[str] = set()
        reporter.update("embed images", self.images, len(plan.records))

    def add(self, unit: _Unit, rows: int, chunks: int, node: str) -> None:
        if unit.kind == "images":
            self.images += rows
            self.reporter.update("embed images", self.images, len(self.plan.records))
        else:
            self.captions += rows
            self.reporter.update("embed captions", self.captions, len(self.plan.captions))
        self.chunks += chunks
        self.nodes.add(node)
        self.reporter.update("embed chunks", self.chunks, len(self.plan.bounds))


def _encode_on_ray(
    plan: _Plan,
    dataset: PreparedDataset,
    folder: Path,
    model: tuple[LoadedModel, ModelSpec, type[UnitEncoder]],
    options: RayOptions,
    reporter: Reporter,
    stub: dict[str, Any],
    spent: float,
) -> None:
    """Encode ``plan.todo`` on Ray, writing each chunk as it completes; the manifest stub (an unfinished
    cache of these inputs) is written first and, with the time spent, last, even when interrupted."""
    lm, spec, encoder = model
    rows, units = _units(plan, dataset, options.batch_size)
    assembler = _Assembler(plan, folder, lm.embed_dim, options.chunk_size)
    write_json(folder / MANIFEST, {**stub, "encode_seconds": spent})
    start = time.perf_counter()
    try:
        with ray_session(options.address, options.num_cpus) as ray:
            progress = _Progress(plan, units, reporter)
            for row in run_units(ray, rows, spec, options, encoder):
                reporter.check_cancelled()
                unit = units[int(row["unit"])]
                vectors = np.frombuffer(row["vectors"], dtype=np.float32).reshape(-1, lm.embed_dim)
                failed = [(int(pos), str(reason)) for pos, reason in json.loads(row["failed"])]
                for pos, reason in failed:
                    path = dataset.image_path(plan.records[unit.rows[pos]])
                    reporter.log(f"skipped image {path}: {reason}")
                written = assembler.add(unit, vectors, failed)
                progress.add(unit, len(vectors), len(written), str(row["node"]))
            reporter.log(f"encoded {len(units)} units on {len(progress.nodes)} Ray node(s)")
    finally:
        elapsed = time.perf_counter() - start
        write_json(folder / MANIFEST, {**stub, "encode_seconds": round(spent + elapsed, 3)})


# -- a list of images (a library's new files) ---------------------------------------------------------------
def ray_image_batches(
    lm: LoadedModel,
    spec: ModelSpec,
    paths: list[Path],
    batch_size: int = 64,
    reporter: Reporter | None = None,
    options: RayOptions | None = None,
) -> Iterator[ImageBatch]:
    """:func:`core.embed.engine.iter_image_batches` on Ray: the same batches and vectors, each yielded as
    it arrives (in any order; ``indices`` say where it belongs), for a caller that stores batch by batch."""
    reporter, options = ensure(reporter), options or RayOptions()
    units = [
        {"unit": n, "kind": "images", "payload": json.dumps([str(p) for p in paths[s : s + batch_size]])}
        for n, s in enumerate(range(0, len(paths), batch_size))
    ]
    if not units:
        return
    done = 0
    with ray_session(options.address, options.num_cpus) as ray:
        for row in run_units(ray, units, spec, options):
            reporter.check_cancelled()
            vectors = np.frombuffer(row["vectors"], dtype=np.float32).reshape(-1, lm.embed_dim).copy()
            indices = np.arange(len(vectors)) + int(row["unit"]) * batch_size
            failed = [(int(indices[pos]), str(reason)) for pos, reason in json.loads(row["failed"])]
            for index, reason in failed:
                reporter.log(f"skipped image {paths[index]}: {reason}")
            done += len(vectors)
            reporter.update("embed images", done, len(paths))
            yield ImageBatch(indices, vectors, failed)
