"""``capsearch clean``: disk use of everything under the root, and pruning of what is stale, never outside."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from core.cli import main
from core.housekeeping.inventory import inventory

DEAD_PID = 4_194_304 + 17  # above Linux's pid_max: no process has it


def _json(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def _cache(root: Path, folder: str, **manifest: object) -> Path:
    base = {"format": 2, "model_id": "m1@111", "dataset": "ds", "dataset_fingerprint": "abc", "count": 4}
    path = root / "embeddings" / folder
    _json(path / "manifest.json", {**base, **manifest})
    (path / "image_emb.npy").write_bytes(b"\0" * 100)
    return path


def _index(root: Path, folder: str, **meta: object) -> Path:
    base = {"model_id": "m1@111", "count": 4, "ids": [], "vectors_sha256": "a", "faiss_sha256": "b"}
    path = root / "indexes" / folder
    _json(path / "index.json", {**base, **meta})
    (path / "index.faiss").write_bytes(b"\0" * 50)
    return path


@pytest.fixture
def root(artifacts: Path) -> Path:
    """A root holding one dataset, one model, fresh and stale caches and indexes, and temporaries."""
    _json(artifacts / "datasets" / "ds" / "dataset.json", {"name": "ds", "input_checksum": "abc"})
    _json(artifacts / "models" / "m1" / "model.json", {"model_id": "m1@111"})
    (artifacts / "libraries" / "home").mkdir(parents=True)
    _cache(artifacts, "m1_111/ds/test")
    _cache(artifacts, "m1_000/ds/test", model_id="m1@000")
    _cache(artifacts, "ViT-B-32_random/gone/test", model_id="ViT-B-32@random", dataset="gone")
    _cache(artifacts, "ViT-B-32_random/ds/test", model_id="ViT-B-32@random", format=1)
    _cache(artifacts, "ViT-B-32_random/ds/val", model_id="ViT-B-32@random", dataset_fingerprint="old")
    _cache(artifacts, "nobody_123/ds/test", model_id="nobody@123")
    _index(artifacts, "m1_111/ds/test/images-exact")
    _index(artifacts, "m1_111/ds/test/images-hnsw-m32-efc200", vectors_sha256=None, faiss_sha256=None)
    _index(artifacts, "m1_111/ds/val/images-exact")
    (artifacts / "embeddings" / "m1_111" / "ds" / "test" / f".image_emb.npy.pid{DEAD_PID}.x.tmp").write_bytes(
        b"t"
    )
    (artifacts / "models" / f".live.pid{os.getpid()}.x.tmp").write_bytes(b"t")
    return artifacts


STALE = {
    "embeddings/m1_000/ds/test": "model m1 was saved again since",
    "embeddings/ViT-B-32_random/gone/test": "dataset gone is gone",
    "embeddings/ViT-B-32_random/ds/test": "format 1 (current 2)",
    "embeddings/ViT-B-32_random/ds/val": "dataset ds was prepared again since",
    "embeddings/nobody_123/ds/test": "model nobody is not under the artifacts root",
    "indexes/m1_111/ds/test/images-hnsw-m32-efc200": "an older index format",
    "indexes/m1_111/ds/val/images-exact": "its embedding cache is gone",
    f"embeddings/m1_111/ds/test/.image_emb.npy.pid{DEAD_PID}.x.tmp": "leftover",
}
KEPT = {
    "datasets/ds",
    "models/m1",
    "libraries/home",
    "embeddings/m1_111/ds/test",
    "indexes/m1_111/ds/test/images-exact",
}


def test_inventory_lists_everything_and_says_what_is_stale(root: Path) -> None:
    items = {item.name: item for item in inventory(root)}
    assert set(items) == set(STALE) | KEPT
    for name, reason in STALE.items():
        assert reason in (items[name].stale or ""), name
    assert all(items[name].stale is None for name in KEPT)
    assert items["models/m1"].usage.bytes > 0 and items["embeddings/m1_111/ds/test"].usage.files == 3


def test_dry_run_deletes_nothing_then_yes_deletes_exactly_the_stale(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    assert main(["clean", "--dry-run"]) == 0
    assert "stale or unused: 8 items" in capsys.readouterr().out
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before
    assert main(["clean", "--yes", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["removed"]) == set(STALE)
    assert all((root / name).exists() for name in KEPT)
    assert not any((root / name).exists() for name in STALE)
    assert not (root / "embeddings" / "nobody_123").exists()  # emptied parents go too
    assert (root / "models" / f".live.pid{os.getpid()}.x.tmp").exists()  # a live writer's temp stays
    assert {i.name for i in inventory(root) if i.stale} == set()


def test_without_a_terminal_it_asks_for_yes(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["clean"]) == 2
    assert "--yes" in capsys.readouterr().err
    assert (root / "embeddings" / "m1_000").exists()


def test_unused_days_prunes_old_caches_only(root: Path) -> None:
    old = root / "embeddings" / "m1_111" / "ds" / "test"
    for path in old.iterdir():
        os.utime(path, (1_000_000, 1_000_000))
    items = {i.name: i for i in inventory(root, unused_days=30)}
    assert "unused for over 30 days" in (items["embeddings/m1_111/ds/test"].stale or "")
    assert items["models/m1"].stale is None and items["indexes/m1_111/ds/test/images-exact"].stale is None


def test_never_follows_a_symlink_out_of_the_root(root: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    _cache(outside, "m1_000/ds/test", model_id="m1@000", format=1)  # stale-looking, but not ours
    (outside / f".x.pid{DEAD_PID}.y.tmp").write_bytes(b"t")
    before = sorted(outside.rglob("*"))
    (root / "embeddings" / "link").symlink_to(outside / "embeddings")
    (root / "indexes" / "m1_111" / "ds" / "linked").symlink_to(outside)
    (root / "cache").mkdir()
    (root / "cache" / "images").symlink_to(outside)
    names = {i.name for i in inventory(root)}
    assert not any("link" in n or n.startswith("cache/") for n in names)
    assert main(["clean", "--yes"]) == 0
    assert sorted(outside.rglob("*")) == before
    assert (root / "embeddings" / "link").is_symlink()


def test_a_real_cache_of_an_older_format_is_listed_and_rebuilt_by_its_loader(
    artifacts: Path, tiny_model
) -> None:
    from core.data.prepare import prepare_synthetic
    from core.embed.cache import split_embeddings

    data = prepare_synthetic(n=12, seed=1, out=artifacts / "datasets" / "tiny12")
    emb = split_embeddings(tiny_model, data, "test")
    name = emb.cache_dir.relative_to(artifacts).as_posix()
    assert {i.name: i.stale for i in inventory(artifacts)}[name] is None
    manifest = json.loads((emb.cache_dir / "manifest.json").read_text())
    (emb.cache_dir / "manifest.json").write_text(json.dumps({**manifest, "format": 1}))
    assert "format 1" in ({i.name: i.stale for i in inventory(artifacts)}[name] or "")
    assert split_embeddings(tiny_model, data, "test").reused is False  # the loader rebuilds it
    assert {i.name: i.stale for i in inventory(artifacts)}[name] is None
