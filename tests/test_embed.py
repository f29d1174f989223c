"""The embedding engine (exact length-bucketed text, overlapped images, failures) and the split cache."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F
from recorder import Recorder

from core.data.images import load_rgb
from core.data.prepare import prepare_synthetic
from core.data.records import PreparedDataset, load_dataset
from core.embed import cache as cache_mod
from core.embed import engine
from core.embed.cache import split_embeddings
from core.embed.engine import (
    MIN_BATCH_TOKENS,
    encode_images,
    encode_text_query,
    encode_texts,
    length_batches,
    text_forward,
    token_lengths,
)
from core.errors import Cancelled, CapsearchError
from core.models.checkpoint import build_model, make_preprocess, make_tokenizer
from core.models.loading import LoadedModel, load_model
from core.progress import Reporter

CAPTIONS = [
    "a dog",
    "Two children play on a red slide in a sunny park while their parents watch from a bench .",
    "wow !",  # "!" is BPE token id 0, the padding value
    "a black and white dog jumps over a log",
    " ".join(["surfer"] * 90),  # longer than the 77-token context: cut by the tokenizer
    "people",
]


@pytest.fixture(scope="module")
def tiny32() -> LoadedModel:
    return load_model("capsearch-tiny", device="cpu", precision="fp32")


@pytest.fixture
def dataset(tmp_path: Path) -> PreparedDataset:
    """A private small synthetic dataset (its files may be edited): 28 train images, 5 captions each."""
    return prepare_synthetic(n=40, seed=1, out=tmp_path / "syn")


def _reference_text(lm: LoadedModel, texts: list[str]) -> np.ndarray:
    with torch.inference_mode():
        return F.normalize(lm.model.encode_text(lm.tokenizer(texts)), dim=-1).numpy()


def _model_from_cfg(cfg: dict[str, Any], model_id: str) -> LoadedModel:
    """An fp32 LoadedModel around a seeded random-init model built from ``cfg``."""
    with torch.random.fork_rng():
        torch.manual_seed(3)
        model = build_model(cfg).eval()
    return LoadedModel(
        model_id.split("@")[0], None, model_id, model, make_preprocess(model), make_tokenizer(cfg),
        torch.device("cpu"), cfg["embed_dim"], 77,
    )  # fmt: skip


def _text_model(name: str, tiny32: LoadedModel) -> LoadedModel:
    """capsearch-tiny; ViT-B-32's text tower (beside a tiny image tower, to build fast); a CustomTextCLIP;
    the compact models' Hugging Face (MiniLM, mean-pooled) text tower."""
    tiny_cfg = open_clip.get_model_config("capsearch-tiny")
    if name in ("ViT-B-32", "capsearch-compact-minilm"):
        cfg = {**open_clip.get_model_config(name), "vision_cfg": tiny_cfg["vision_cfg"]}
        return _model_from_cfg(cfg, f"{name}-text@random")
    if name == "custom-text":
        return _model_from_cfg({**tiny_cfg, "custom_text": True}, "custom@random")
    return tiny32


def test_token_lengths_end_at_the_eot_token(tiny32: LoadedModel) -> None:
    tokens = tiny32.tokenizer(CAPTIONS)
    lengths = token_lengths(tokens)
    eot = tokens.argmax(dim=1).numpy()
    assert (lengths == eot + 1).all() and lengths[4] == 77 and lengths[0] == 4


@pytest.mark.parametrize("precision", ["fp32", "fp32fast"])
@pytest.mark.parametrize("name", ["capsearch-tiny", "ViT-B-32", "custom-text", "capsearch-compact-minilm"])
def test_length_bucketed_text_equals_encode_text(name: str, precision: str, tiny32: LoadedModel) -> None:
    """Exact fp32, and fp32fast: packed blocks, the last one at the pooled token only (to rounding)."""
    lm = _text_model(name, tiny32)
    reference = _reference_text(lm, CAPTIONS)
    lm = dataclasses.replace(lm, precision=precision)
    assert text_forward(lm)[1] is not None  # every one of these towers runs on cut tokens
    got = encode_texts(lm, CAPTIONS, batch_size=2)  # several buckets of different lengths
    assert got.dtype == np.float32 and got.shape == reference.shape
    assert np.abs(got - reference).max() < 1e-5
    assert np.abs(encode_text_query(lm, CAPTIONS[1]) - reference[1]).max() < 1e-5


def test_length_batches_pad_only_small_runs() -> None:
    lengths = np.array([12] * 200 + [5] + [13] * 150 + [40, 41, 77] + [14] * 30)[::-1]
    batches = length_batches(lengths, batch_size=256)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(len(lengths)))
    assert (np.diff(lengths[flat]) >= 0).all()
    assert [sorted(set(lengths[b].tolist())) for b in batches] == [[5, 12], [13], [14, 40], [41, 77]]
    for idx in batches:  # captions shorter than a batch's longest hold fewer than MIN_BATCH_TOKENS tokens
        shorter = lengths[idx][lengths[idx] < lengths[idx].max()]
        assert len(shorter) * shorter.max(initial=0) < MIN_BATCH_TOKENS
    assert [len(b) for b in length_batches(np.full(10, 77), 4)] == [4, 4, 2]


def test_bf16_engine_stays_close_to_fp32(tiny32: LoadedModel, dataset: PreparedDataset) -> None:
    lm16 = load_model("capsearch-tiny", device="cpu", precision="bf16")
    assert lm16.model.visual.conv1.weight.dtype == torch.float32  # the model itself stays fp32
    texts = encode_texts(lm16, CAPTIONS)
    assert np.einsum("nd,nd->n", texts, _reference_text(tiny32, CAPTIONS)).min() > 0.995
    paths = [dataset.image_path(r) for r in dataset.split("train")[:4]]
    a, b = encode_images(lm16, paths)[0], encode_images(tiny32, paths)[0]
    assert np.einsum("nd,nd->n", a, b).min() > 0.995


def test_low_precision_copy_follows_weight_updates(tiny32: LoadedModel) -> None:
    lm16 = load_model("capsearch-tiny", device="cpu", precision="bf16")
    before = encode_text_query(lm16, CAPTIONS[3])
    with torch.no_grad():
        for p in lm16.model.parameters():
            p.mul_(1.5).add_(0.01)  # what an optimizer step does: in-place updates
    after = encode_text_query(lm16, CAPTIONS[3])
    assert float(before @ after) < 0.999
    assert float(after @ _reference_text(lm16, [CAPTIONS[3]])[0]) > 0.995


def test_empty_query_is_a_clear_error(tiny32: LoadedModel) -> None:
    with pytest.raises(CapsearchError, match="empty"):
        encode_text_query(tiny32, "   ")
    assert encode_texts(tiny32, []).shape == (0, 64)


def test_images_match_the_model_and_failures_are_skipped(
    tiny32: LoadedModel, dataset: PreparedDataset
) -> None:
    records = dataset.split("train")[:6]
    good = [dataset.image_path(r) for r in records]
    broken = dataset.root / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    paths = [good[0], broken, *good[1:3], dataset.root / "missing.png", *good[3:]]
    reporter = Recorder()
    emb, failed = encode_images(tiny32, paths, batch_size=3, reporter=reporter)

    assert [i for i, _ in failed] == [1, 4] and all(reason for _, reason in failed)
    assert not emb[[1, 4]].any()
    ok = [0, 2, 3, 5, 6, 7]
    assert np.allclose(np.linalg.norm(emb[ok], axis=1), 1, atol=1e-5)
    with torch.inference_mode():
        batch = torch.stack([tiny32.preprocess(load_rgb(p)) for p in good])
        reference = F.normalize(tiny32.model.encode_image(batch), dim=-1).numpy()
    assert np.abs(emb[ok] - reference).max() < 1e-5
    assert sum("skipped image" in line for line in reporter.logs) == 2
    assert reporter.updates[-1] == ("embed images", len(paths), len(paths))


def test_decoding_threads_never_outnumber_the_free_cores_and_agree(
    tiny32: LoadedModel, dataset: PreparedDataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = [dataset.image_path(r) for r in dataset.split("train")[:9]]
    paths.insert(4, dataset.root / "missing.png")
    calls: list[tuple[int, bool]] = []  # (threads, in the background)
    split, background = engine.split_batches, engine._in_background
    monkeypatch.setattr(engine, "split_batches", lambda *a: calls.append((a[2], False)) or split(*a))
    monkeypatch.setattr(engine, "_in_background", lambda it: calls.append((-1, True)) or background(it))
    results = []
    for cores, threads, mode in [(2, 2, "auto"), (4, 1, "auto"), (2, 1, "auto"), (2, 2, "background")]:
        monkeypatch.setattr(engine, "cpu_cores", lambda cores=cores: cores)
        monkeypatch.setattr(engine, "model_threads", lambda plan, threads=threads: threads)
        monkeypatch.setattr(engine, "DECODE_MODE", mode)
        results.append(encode_images(tiny32, paths, batch_size=4, workers=0))
    # every core busy: between the model's calls, split in two; 3 cores free: ahead, on 3 threads; 1 free:
    # ahead on 1; background: one thread ahead whatever the cores
    assert calls == [(2, False), (3, False), (-1, True), (1, False), (-1, True), (1, False), (-1, True)]
    emb, failed = results[0]
    assert failed == [(4, failed[0][1])] and not emb[4].any() and emb[[0, 9]].any()
    for other, other_failed in results[1:]:
        assert np.array_equal(other, emb) and other_failed == failed


@pytest.mark.slow
def test_spawned_decode_workers_give_the_same_result(tiny32: LoadedModel, dataset: PreparedDataset) -> None:
    paths = [dataset.image_path(r) for r in dataset.split("train")[:5]]
    paths.insert(2, dataset.root / "missing.png")
    threaded, failed = encode_images(tiny32, paths, batch_size=2, workers=0)
    spawned, spawned_failed = encode_images(tiny32, paths, batch_size=2, workers=1)
    assert np.abs(spawned - threaded).max() < 1e-6 and spawned_failed == failed == [(2, failed[0][1])]


def _fresh(lm: LoadedModel, data: PreparedDataset, reporter: Reporter | None = None, **kw: Any):
    return split_embeddings(lm, load_dataset(data.dir), "train", reporter=reporter, chunk_size=10, **kw)


def test_cache_is_built_then_reused(artifacts: Path, tiny32: LoadedModel, dataset: PreparedDataset) -> None:
    first = _fresh(tiny32, dataset)
    records = dataset.split("train")
    assert not first.reused and len(first.records) == len(records) == 28
    assert first.image_emb.shape == (28, 64) and first.caption_emb.shape == (140, 64)
    assert first.captions[5] == records[1].captions[0] and first.caption_image[5] == 1
    assert np.abs(first.caption_emb - encode_texts(tiny32, first.captions)).max() < 1e-5
    folder = first.cache_dir
    assert folder == artifacts / "embeddings" / "capsearch-tiny_random" / dataset.name / "train"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["complete"] and manifest["ids"] == [r.id for r in records]
    assert manifest["model_id"] == "capsearch-tiny@random" and manifest["dims"] == 64
    assert not list(folder.glob("chunk-*"))

    reporter = Recorder()
    again = _fresh(tiny32, dataset, reporter)
    assert again.reused and any("reusing" in line for line in reporter.logs)
    assert not any(stage == "embed images" for stage, *_ in reporter.updates)
    assert np.array_equal(again.image_emb, first.image_emb)
    assert np.array_equal(again.caption_emb, first.caption_emb)


def _edit_first_caption(data: PreparedDataset) -> None:
    path = data.dir / "train.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    rows[0]["captions"][0] = "an entirely different caption"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_stale_cache_is_detected_and_rebuilt(
    artifacts: Path, tiny32: LoadedModel, dataset: PreparedDataset
) -> None:
    first = _fresh(tiny32, dataset)
    _edit_first_caption(dataset)
    reporter = Recorder()
    edited = _fresh(tiny32, dataset, reporter)
    assert not edited.reused and any("stale" in line for line in reporter.logs)
    assert edited.captions[0] == "an entirely different caption"
    assert not np.allclose(edited.caption_emb[0], first.caption_emb[0])
    assert np.abs(edited.caption_emb[0] - encode_text_query(tiny32, edited.captions[0])).max() < 1e-5

    image = dataset.image_path(dataset.split("train")[3])
    os.utime(image, ns=(image.stat().st_atime_ns, image.stat().st_mtime_ns + 10**9))  # touch
    reporter = Recorder()
    assert not _fresh(tiny32, dataset, reporter).reused and any("stale" in s for s in reporter.logs)

    reporter = Recorder()  # same model id, other precision: a cache of its own, and the fp32 one stays
    other = _fresh(load_model("capsearch-tiny", device="cpu", precision="bf16"), dataset, reporter)
    assert not other.reused and other.cache_dir == first.cache_dir.with_name("train.bf16")
    assert _fresh(tiny32, dataset).reused

    manifest_path = first.cache_dir / "manifest.json"  # a cache another model left in this folder
    manifest = json.loads(manifest_path.read_text())
    manifest_path.write_text(json.dumps({**manifest, "model_id": "someone-else@random"}))
    reporter = Recorder()
    assert not _fresh(tiny32, dataset, reporter).reused and any("made by" in s for s in reporter.logs)


def test_interrupted_run_resumes_from_completed_chunks(
    artifacts: Path, tiny32: LoadedModel, dataset: PreparedDataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(Cancelled):
        _fresh(tiny32, dataset, Recorder(cancel_after_chunks=1), batch_size=4)
    folder = cache_mod.cache_dir(tiny32.model_id, dataset.name, "train")
    assert [p.name for p in folder.glob("chunk-*.npz")] == ["chunk-00000.npz"]
    assert not json.loads((folder / "manifest.json").read_text())["complete"]

    encoded: list[int] = []
    real = cache_mod.iter_image_batches

    def spy(lm: LoadedModel, paths: list[Path], *args: Any, **kwargs: Any):
        encoded.append(len(paths))
        return real(lm, paths, *args, **kwargs)

    monkeypatch.setattr(cache_mod, "iter_image_batches", spy)
    reporter = Recorder()
    resumed = _fresh(tiny32, dataset, reporter, batch_size=4)
    assert encoded == [18]  # 28 images in chunks of 10: only chunks 2 and 3 were left
    assert any("resuming" in line and "1 of 3 chunks" in line for line in reporter.logs)
    progress = {stage: (done, total) for stage, done, total in reporter.updates}  # the last of each stage
    assert progress["embed images"] == (28, 28) and progress["embed captions"] == (140, 140)
    assert [u for u in reporter.updates if u[0] == "embed images"][0] == ("embed images", 14, 28)

    shutil.rmtree(folder)
    full = _fresh(tiny32, dataset)
    assert np.abs(resumed.image_emb - full.image_emb).max() < 1e-5
    assert np.abs(resumed.caption_emb - full.caption_emb).max() < 1e-5


def test_unreadable_image_is_listed_not_fatal(
    artifacts: Path, tiny32: LoadedModel, dataset: PreparedDataset
) -> None:
    bad = dataset.split("train")[12]
    dataset.image_path(bad).write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    reporter = Recorder()
    emb = _fresh(tiny32, dataset, reporter)
    assert [image_id for image_id, _ in emb.failed] == [bad.id]
    assert not emb.image_emb[12].any() and np.linalg.norm(emb.image_emb[11]) > 0.99
    assert any(bad.image in line for line in reporter.logs)
    again = _fresh(tiny32, dataset)
    assert again.reused and again.failed == emb.failed


def test_cli_embed_builds_then_reuses(
    artifacts: Path, dataset: PreparedDataset, capsys: pytest.CaptureFixture[str]
) -> None:
    from core.cli import build_parser
    from core.cli.console import main

    argv = ["embed", "--dataset", str(dataset.dir), "--model", "capsearch-tiny", "--split", "all", "--json"]
    assert main(build_parser(), argv) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["split"], r["images"], r["reused"]) for r in rows] == [
        ("train", 28, False),
        ("val", 6, False),
        ("test", 6, False),
    ]
    assert {(r["precision"], r["computed_in"]) for r in rows} == {("fp32", "fp32")}
    assert main(build_parser(), argv) == 0
    assert all(r["reused"] for r in json.loads(capsys.readouterr().out))
    with pytest.raises(SystemExit) as refused:  # refused by the parser, before any work
        main(build_parser(), [*argv[:5], "--precision", "fp8"])
    assert refused.value.code == 2
    assert "invalid choice: 'fp8'" in capsys.readouterr().err
