"""Training parts: losses, schedule, WiSE-FT interpolation, batching and augmentation."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from core.train import wise_ft
from core.train.data import CaptionTable, augment, epoch_batches
from core.train.loss import ClipLoss, MarginRankingLoss, clamp_logit_scale
from core.train.schedule import lr_factor, progress_of


def _unit(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x, dim=-1)


def test_clip_loss_is_low_for_matched_pairs_and_ln_n_for_uninformative():
    emb = _unit(torch.eye(8))
    scale = torch.tensor(math.log(100.0))
    assert ClipLoss()(emb, emb, scale) < 0.01
    same = _unit(torch.ones(8, 4))
    assert ClipLoss()(same, same, scale) == pytest.approx(math.log(8), rel=1e-4)


def test_clip_loss_matches_open_clip_and_a_loop_reference_with_k_captions():
    from open_clip.loss import ClipLoss as OpenClipLoss

    g = torch.Generator().manual_seed(0)
    image, text = _unit(torch.randn(6, 16, generator=g)), _unit(torch.randn(6, 3, 16, generator=g))
    scale = torch.tensor(2.5)
    ours = ClipLoss()(image, text[:, 0], scale)
    assert ours == pytest.approx(float(OpenClipLoss()(image, text[:, 0], scale.exp())), rel=1e-5)
    # k = 3: each caption a text->image query over 6 images; each image an image->text query over all 18
    # captions whose positives are its own 3 (mean log-probability)
    flat = text.reshape(18, 16)
    logits = scale.exp() * image @ flat.t()
    t2i = sum(-torch.log_softmax(logits[:, j], 0)[j // 3] for j in range(18)) / 18
    i2t = sum(-torch.log_softmax(logits[i], 0)[3 * i + c] for i in range(6) for c in range(3)) / 18
    assert ClipLoss()(image, text, scale) == pytest.approx(float((t2i + i2t) / 2), rel=1e-5)


def test_margin_loss_sanity():
    loss = MarginRankingLoss(margin=0.2)
    g = torch.Generator().manual_seed(2)
    image, slots = _unit(torch.randn(5, 8, generator=g)), _unit(torch.randn(5, 3, 8, generator=g))
    mean_of_slots = sum(float(loss(image, slots[:, j])) for j in range(3)) / 3
    assert loss(image, slots) == pytest.approx(mean_of_slots, rel=1e-6)  # k captions: the slots' mean
    emb = _unit(torch.eye(4))
    assert loss(emb, emb) == 0  # positives 1, negatives 0: every hinge is satisfied
    same = _unit(torch.ones(4, 4))
    assert loss(same, same) == pytest.approx(0.4)  # hardest negative ties the positive: margin, both ways
    text = _unit(torch.randn(4, 8, generator=torch.Generator().manual_seed(0)))
    image = text.clone().requires_grad_(True)
    noisy = _unit(image + 0.5 * torch.randn(4, 8, generator=torch.Generator().manual_seed(1)))
    value = loss(noisy, text)
    value.backward()
    moved = _unit(image - 0.1 * image.grad)
    assert (
        loss(_unit(moved + 0.5 * torch.randn(4, 8, generator=torch.Generator().manual_seed(1))), text)
        <= value
    )


def test_logit_scale_is_clamped_at_100():
    model = torch.nn.Module()
    model.logit_scale = torch.nn.Parameter(torch.tensor(9.0))
    clamp_logit_scale(model)
    assert float(model.logit_scale.detach().exp()) == pytest.approx(100.0)


def test_schedule_warms_up_then_follows_a_cosine():
    assert lr_factor(0, 10, 0.0) == pytest.approx(0.1)
    assert lr_factor(9, 10, 0.0) == pytest.approx(1.0)
    assert lr_factor(50, 10, 0.5) == pytest.approx(0.5)
    assert lr_factor(100, 10, 1.0, min_ratio=0.1) == pytest.approx(0.1)
    assert progress_of(10, 100) == pytest.approx(0.1)
    assert progress_of(10, 100, elapsed_s=30, budget_s=60) == pytest.approx(0.5)
    # a busy machine: the budget is spent but only 10 of the 40 promised steps are done
    assert progress_of(10, 100, elapsed_s=90, budget_s=60, min_steps=40) == pytest.approx(0.25)
    assert progress_of(50, 100, elapsed_s=30, budget_s=60, min_steps=40) == pytest.approx(0.5)


def test_wise_ft_endpoints_and_sweep():
    start = {"w": torch.zeros(3), "n": torch.tensor(1)}
    tuned = {"w": torch.ones(3), "n": torch.tensor(2)}
    assert torch.equal(wise_ft.interpolate(start, tuned, 0.0)["w"], start["w"])
    assert torch.equal(wise_ft.interpolate(start, tuned, 1.0)["w"], tuned["w"])
    assert torch.allclose(wise_ft.interpolate(start, tuned, 0.3)["w"], torch.full((3,), 0.3))
    model = torch.nn.Linear(2, 1, bias=False)
    s0 = {"weight": torch.zeros(1, 2)}
    s1 = {"weight": torch.ones(1, 2)}

    def score(m):  # best at alpha = 0.6
        value = -abs(float(m.weight[0, 0].detach()) - 0.6)
        return value, {"mean_recall": value}

    result = wise_ft.sweep(model, s0, s1, score)
    assert result.best_alpha == pytest.approx(0.6)
    assert len(result.curve) == 11
    assert torch.allclose(model.weight, torch.full((1, 2), 0.6))


def test_epoch_batches_resample_captions_and_are_seeded():
    table = CaptionTable(
        captions=[f"c{i}" for i in range(50)],
        caption_image=np.repeat(np.arange(10), 5),
        offsets=np.arange(0, 51, 5),
    )
    a = epoch_batches(table, 4, seed=0, epoch=0)
    assert len(a) == 2 and all(len(i) == 4 for i, _ in a)
    for images, captions in a:
        assert torch.equal(torch.from_numpy(table.caption_image)[captions], images)
    again = epoch_batches(table, 4, seed=0, epoch=0)
    assert all(torch.equal(x[1], y[1]) for x, y in zip(a, again, strict=True))
    later = [epoch_batches(table, 10, seed=0, epoch=e)[0][1].sort().values for e in range(1, 4)]
    assert any(not torch.equal(later[0], other) for other in later[1:])


def test_augment_keeps_shape_and_is_identity_when_off():
    x = torch.rand(4, 3, 16, 16)
    g = torch.Generator().manual_seed(0)
    assert augment(x, 1.0, False, g) is x
    y = augment(x, 0.5, True, g)
    assert y.shape == x.shape and not torch.allclose(x, y)


def test_epoch_batches_with_several_captions_per_image():
    table = CaptionTable(
        captions=[f"c{i}" for i in range(13)],
        caption_image=np.array([0] * 5 + [1] * 5 + [2] * 3),
        offsets=np.array([0, 5, 10, 13]),
    )
    ((images, captions),) = epoch_batches(table, 3, seed=1, epoch=0, per_image=5)
    assert captions.shape == (3, 5)
    owner = torch.from_numpy(table.caption_image)
    for image, row in zip(images, captions, strict=True):
        assert torch.all(owner[row] == image)
        distinct = len(set(row.tolist()))
        assert distinct == min(5, int(table.offsets[image + 1] - table.offsets[image]))


def test_train_config_is_checked_when_made():
    from core.errors import CapsearchError
    from core.train.trainer import TrainConfig

    assert TrainConfig(freeze="last:2", precision="fast").loss == "clip"
    for bad in ({"loss": "hinge"}, {"precision": "fp8"}, {"freeze": "some"}, {"captions_per_image": 0}):
        with pytest.raises(CapsearchError):
            TrainConfig(**bad)


def test_finetune_summary_file_is_versioned_and_reads_back():
    from core.errors import CapsearchError
    from core.train.recipes import FinetuneSummary

    recall = {"mean_recall": 1.0}
    summary = FinetuneSummary(
        "ft",
        "m@random",
        "ft@abc",
        "d",
        {"lr": 1e-5},
        False,
        1.0,
        3,
        1.0,
        "epochs",
        0.5,
        [],
        [],
        recall,
        recall,
        recall,
    )
    data = json.loads(json.dumps(summary.to_json()))
    assert data["format_version"] == 1 and FinetuneSummary.from_json(data) == summary
    with pytest.raises(CapsearchError, match="format"):
        FinetuneSummary.from_json({**data, "format_version": 0})
