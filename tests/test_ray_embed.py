"""The Ray embedding engine on a local two-CPU Ray: the local engine's vectors, Recall@K and cache, a worker
killed mid-run, resuming and the CLI. One Ray for the module (starting one costs seconds)."""

from __future__ import annotations

import json
import logging
import os
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from recorder import Recorder

from core.data.prepare import prepare_synthetic
from core.data.records import PreparedDataset
from core.embed.cache import SplitEmbeddings, cache_dir, split_embeddings
from core.embed.engine import iter_image_batches
from core.embed.ray_engine import ModelSpec, RayOptions, UnitEncoder, ray_image_batches, ray_split_embeddings
from core.errors import Cancelled
from core.evaluation.recall import recall_metrics
from core.models.loading import LoadedModel, load_model
from core.progress import Reporter

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'capsearch[ray]')")
pytestmark = [pytest.mark.slow, pytest.mark.ray]

# 28 train images in chunks of 10; image batches of 4 cross no chunk edge, batches of 6 do.
OPTIONS = RayOptions(batch_size=6, chunk_size=10)


@pytest.fixture(scope="module")
def local_ray() -> Any:
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def tiny32() -> LoadedModel:
    return load_model("capsearch-tiny", device="cpu", precision="fp32")


@pytest.fixture
def dataset(tmp_path: Path) -> PreparedDataset:
    """28 train images with 5 captions each; one image is unreadable (a zero row, listed as failed)."""
    data = prepare_synthetic(n=40, seed=1, out=tmp_path / "syn")
    data.image_path(data.split("train")[13]).write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    return data


def _local(
    lm: LoadedModel, data: PreparedDataset, root: Path, monkeypatch: pytest.MonkeyPatch
) -> SplitEmbeddings:
    monkeypatch.setenv("CAPSEARCH_ARTIFACTS", str(root))
    return split_embeddings(lm, data, "train", batch_size=OPTIONS.batch_size, chunk_size=OPTIONS.chunk_size)


def _on_ray(
    lm: LoadedModel, data: PreparedDataset, reporter: Reporter | None = None, **kw: Any
) -> SplitEmbeddings:
    encoder = kw.pop("encoder", UnitEncoder)
    options = RayOptions(**{**OPTIONS.__dict__, **kw})
    return ray_split_embeddings(
        lm, ModelSpec.of("capsearch-tiny", None, lm), data, "train", reporter, options, encoder
    )


def _assert_same(ray_emb: SplitEmbeddings, local: SplitEmbeddings) -> None:
    assert ray_emb.image_emb.dtype == np.float32 and ray_emb.image_emb.shape == local.image_emb.shape
    assert np.abs(ray_emb.image_emb - local.image_emb).max() <= 1e-6
    assert np.abs(ray_emb.caption_emb - local.caption_emb).max() <= 1e-6
    assert ray_emb.failed == local.failed


def test_ray_gives_the_local_engines_vectors_recall_and_cache(
    local_ray: Any,
    tiny32: LoadedModel,
    dataset: PreparedDataset,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    local = _local(tiny32, dataset, tmp_path / "local", monkeypatch)
    monkeypatch.setenv("CAPSEARCH_ARTIFACTS", str(tmp_path / "ray"))
    reporter = Recorder()
    on_ray = _on_ray(tiny32, dataset, reporter)
    _assert_same(on_ray, local)
    assert [f[0] for f in on_ray.failed] == [dataset.split("train")[13].id] and not on_ray.image_emb[13].any()
    assert any("skipped image" in line for line in reporter.logs)
    assert ("embed images", 28, 28) in reporter.updates and ("embed chunks", 3, 3) in reporter.updates
    assert not any(line.startswith("resuming") for line in reporter.logs)
    k = (1, 5, 10)
    assert recall_metrics(on_ray.image_emb, on_ray.caption_emb, on_ray.caption_image, k) == recall_metrics(
        local.image_emb, local.caption_emb, local.caption_image, k
    )
    # the cache is the local engine's: complete, no chunk left, and reused by it as it is
    manifest = json.loads((on_ray.cache_dir / "manifest.json").read_text())
    local_manifest = json.loads((local.cache_dir / "manifest.json").read_text())
    drop = ("encode_seconds", "sha256")
    assert {k: v for k, v in manifest.items() if k not in drop} == {
        k: v for k, v in local_manifest.items() if k not in drop
    }
    assert not list(on_ray.cache_dir.glob("chunk-*"))
    again = split_embeddings(tiny32, dataset, "train", chunk_size=OPTIONS.chunk_size)
    assert again.reused and np.array_equal(again.image_emb, on_ray.image_emb)


def _dies_once(marker: Path) -> type[UnitEncoder]:
    """An encoder whose actor SIGKILLs itself on its second unit, once in the whole run (``marker``)."""

    class DiesOnce(UnitEncoder):
        calls = 0

        def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            self.calls += 1
            if self.calls == 2 and not marker.exists():
                marker.write_text(str(os.getpid()))
                os.kill(os.getpid(), signal.SIGKILL)
            return super().__call__(batch)

    return DiesOnce


def test_a_worker_killed_mid_run_still_gives_complete_equal_output(
    local_ray: Any,
    tiny32: LoadedModel,
    dataset: PreparedDataset,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    local = _local(tiny32, dataset, tmp_path / "local", monkeypatch)
    monkeypatch.setenv("CAPSEARCH_ARTIFACTS", str(tmp_path / "ray"))
    marker = tmp_path / "killed.pid"
    on_ray = _on_ray(tiny32, dataset, encoder=_dies_once(marker))
    killed = int(marker.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(killed, 0)
    _assert_same(on_ray, local)


def test_an_interrupted_ray_run_leaves_whole_chunks_and_resumes(
    local_ray: Any,
    tiny32: LoadedModel,
    dataset: PreparedDataset,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    local = _local(tiny32, dataset, tmp_path / "local", monkeypatch)
    monkeypatch.setenv("CAPSEARCH_ARTIFACTS", str(tmp_path / "ray"))
    with pytest.raises(Cancelled):  # as Ctrl+C in the CLI: stopped once the first chunk is saved
        _on_ray(tiny32, dataset, Recorder(cancel_after_chunks=1), actors=1)
    folder = cache_dir(tiny32.model_id, dataset.name, "train")
    saved = sorted(p.name for p in folder.iterdir())
    assert "chunk-00000.npz" in saved and "chunk-00002.npz" not in saved, saved
    assert saved == sorted(["manifest.json", *(p.name for p in folder.glob("chunk-*.npz"))])  # no temp file
    assert not json.loads((folder / "manifest.json").read_text())["complete"]
    reporter = Recorder()
    resumed = _on_ray(tiny32, dataset, reporter, actors=1)
    done = len(saved) - 1
    assert any(f"{done} of 3 chunks already done" in line for line in reporter.logs)
    images = [u for u in reporter.updates if u[0] == "embed images"]
    assert images[0] == ("embed images", 10 * done, 28) and images[-1] == ("embed images", 28, 28)
    _assert_same(resumed, local)


def test_cli_embeds_with_the_ray_engine(
    local_ray: Any, dataset: PreparedDataset, artifacts: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from core.cli import build_parser
    from core.cli.console import main

    argv = ["embed", "--dataset", str(dataset.dir), "--model", "capsearch-tiny", "--split", "val", "--json"]
    assert main(build_parser(), [*argv, "--engine", "ray", "--actors", "1"]) == 0
    row = json.loads(capsys.readouterr().out)[0]
    assert (row["engine"], row["images"], row["reused"]) == ("ray", 6, False)
    assert main(build_parser(), argv) == 0  # the local engine takes the Ray engine's cache
    assert json.loads(capsys.readouterr().out)[0]["reused"]
    assert main(build_parser(), [*argv, "--address", "auto"]) == 2
    assert "apply to --engine ray" in capsys.readouterr().err


def test_image_batches_on_ray_are_the_local_engines(
    local_ray: Any, tiny32: LoadedModel, dataset: PreparedDataset
) -> None:
    paths = [dataset.image_path(r) for r in dataset.split("train")]
    local = list(iter_image_batches(tiny32, paths, 8, workers=0))
    spec = ModelSpec.of("capsearch-tiny", None, tiny32)
    batches = ray_image_batches(tiny32, spec, paths, 8, options=RayOptions(actors=1))
    on_ray = sorted(batches, key=lambda b: int(b.indices[0]))
    assert [b.indices.tolist() for b in on_ray] == [b.indices.tolist() for b in local]
    assert [b.failed for b in on_ray] == [b.failed for b in local] and local[1].failed[0][0] == 13
    for got, want in zip(on_ray, local, strict=True):
        assert np.abs(got.embeddings - want.embeddings).max() <= 1e-6


def test_library_add_on_ray_stores_the_local_engines_vectors(
    local_ray, tmp_path, artifacts, capsys, monkeypatch
):
    from library_helpers import make_folder

    import core.embed.ray_engine as ray_engine
    from core.cli import main

    units: list[int] = []
    run_units = ray_engine.run_units
    monkeypatch.setattr(
        ray_engine,
        "run_units",
        lambda ray, todo, *a, **kw: units.append(len(todo)) or run_units(ray, todo, *a, **kw),
    )
    from core.library.library import Library
    from core.library.update import vectors_by_path

    photos = tmp_path / "photos"
    make_folder(photos, 9)
    (photos / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    model = ["--model", "capsearch-tiny", "--device", "cpu", "--precision", "fp32", "--batch-size", "4"]
    assert main(["library", "add", str(photos), "--name", "local", *model]) == 0
    assert main(["library", "add", str(photos), "--name", "viaray", *model, "--engine", "ray"]) == 0
    capsys.readouterr()
    assert units == [3]  # the Ray library's ten files, in batches of 4, ran on Ray
    built = {}
    for name in ("local", "viaray"):
        with Library.open(name) as lib:
            assert lib.active is not None
            built[name] = vectors_by_path(lib, lib.active)
            assert lib.catalogue.counts(lib.active.key)["failed"] == 1
    assert sorted(built["viaray"]) == sorted(built["local"]) and len(built["local"]) == 9
    diff = max(float(np.abs(built["viaray"][p] - built["local"][p]).max()) for p in built["local"])
    assert diff <= 1e-6
