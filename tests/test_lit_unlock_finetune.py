"""capsearch-lit beyond head training: partial unlocking on cached stem activations, and fine-tuning
through the ``capsearch finetune`` recipe on cached frozen features."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from core.models.checkpoint import build_model, save_checkpoint_dir
from core.progress import Reporter
from core.train.frozen_features import split_features
from core.train.lit import LitConfig, lit_model_cfg, train_lit, val_metrics
from core.train.lit_unlock import (
    decode_rows,
    stem_features,
    stem_shape,
    tail_forward,
    train_unlocked,
    with_rows,
)

LITE0 = "capsearch-lit-lite0"


class _Quiet(Reporter):
    pass


@pytest.mark.slow
def test_unlocked_tail_on_cached_stem_rows_equals_the_trunk_and_its_weights_are_saved(
    synthetic_small, artifacts
) -> None:
    cfg = lit_model_cfg(LITE0, unlocked_blocks=2)
    torch.manual_seed(0)
    model = build_model(cfg)
    rows = stem_features(model, cfg, synthetic_small, "val", 2)
    assert np.array_equal(rows, stem_features(model, cfg, synthetic_small, "val", 2))  # from the cache
    pooled = split_features(model, cfg, LITE0, synthetic_small, "val", 1)
    shape = stem_shape(model.visual.trunk, 2, 224)
    with torch.inference_mode():
        tail = F.normalize(
            tail_forward(model.visual.trunk, 2, decode_rows(torch.from_numpy(rows), shape)), dim=-1
        )
    assert np.allclose(tail.numpy(), pooled.images[0], atol=1e-4)

    val = with_rows(pooled, rows)
    head_w = model.visual.trunk.conv_head.weight.detach().clone()
    cfg_train = LitConfig(epochs=2, batch_size=16, lr=1e-3, warmup_steps=1, patience=0)
    result = train_unlocked(model, with_rows(pooled, rows), val, cfg_train, 2, 1e-3, 224, _Quiet())
    assert result.steps > 0 and not torch.equal(head_w, model.visual.trunk.conv_head.weight)
    model_id = save_checkpoint_dir(artifacts / "models" / "lit-unlocked", model, cfg, {})
    state = load_file(str(artifacts / "models" / "lit-unlocked" / "model.safetensors"))
    assert "visual.trunk.conv_head.weight" in state and any(
        k.startswith("visual.trunk.blocks.6.0.") for k in state
    )
    assert not any(k.startswith("visual.trunk.blocks.5.") for k in state)  # frozen: from the package
    from core.models.loading import load_model

    lm = load_model(str(artifacts / "models" / "lit-unlocked"), device="cpu")
    assert lm.model_id.startswith(model_id)
    assert torch.equal(lm.model.visual.trunk.conv_head.weight, model.visual.trunk.conv_head.weight)


@pytest.mark.slow
def test_finetune_recipe_on_a_lit_checkpoint_trains_the_heads_on_cached_features(
    synthetic_small, artifacts
) -> None:
    from core.train.lit_finetune import features
    from core.train.recipes import finetune
    from core.train.setup import start_model

    base = artifacts / "models" / "lit-base"
    fast = LitConfig(epochs=2, batch_size=16, lr=3e-3, warmup_steps=1, patience=0)
    train_lit(LITE0, synthetic_small, base, fast, _Quiet())
    summary = finetune(
        str(base), str(synthetic_small.dir), name="ft-lit", epochs=2, lr=1e-3, alphas=(0.0, 1.0)
    )
    assert summary.config["captions_per_image"] == 5 and summary.config["lr"] == 1e-3
    assert summary.steps > 0 and [row["alpha"] for row in summary.wise_ft_curve] == [0.0, 1.0]
    start = start_model(str(base))
    test = features(start, synthetic_small, "test", _Quiet())
    assert summary.test_before["mean_recall"] == pytest.approx(val_metrics(start.model, test)["mean_recall"])
    state = load_file(str(artifacts / "models" / "ft-lit" / "model.safetensors"))
    assert all(k.startswith(("visual.head.", "text.proj.", "logit_scale")) for k in state)


@pytest.mark.slow
def test_a_subset_dataset_borrows_its_parents_cached_features(synthetic_small, artifacts) -> None:
    from core.atomic import write_json, write_jsonl
    from core.data.records import load_dataset
    from core.train.lit_finetune import features
    from core.train.setup import StartModel

    cfg = lit_model_cfg(LITE0)
    model = build_model(cfg)
    start = StartModel(model, cfg, None, "lit")  # type: ignore[arg-type]
    parent = split_features(model, cfg, LITE0, synthetic_small, "val", 1)
    picked = synthetic_small.split("val")[::-2]  # a reordered subset
    folder = artifacts / "datasets" / "sub"
    write_jsonl(folder / "test.jsonl", [r.to_row() for r in picked])
    meta = {**synthetic_small.meta, "name": "sub", "parent": str(synthetic_small.dir)}
    meta["input_checksum"] = "sub"
    meta["splits"] = {"test": {"images": len(picked), "captions": sum(len(r.captions) for r in picked)}}
    write_json(folder / "dataset.json", meta)
    sub = features(start, load_dataset("sub"), "test", _Quiet())
    rows = [next(i for i, r in enumerate(parent.records) if r.id == p.id) for p in picked]
    assert [r.id for r in sub.records] == [r.id for r in picked]
    assert np.array_equal(sub.images[0], parent.images[0][rows])
    first_caps = [int(np.flatnonzero(parent.caption_image == i)[0]) for i in rows]
    owners = [int(np.flatnonzero(sub.caption_image == j)[0]) for j in range(len(rows))]
    assert np.array_equal(sub.captions[owners], parent.captions[first_caps])
    assert dataclasses.is_dataclass(sub)
