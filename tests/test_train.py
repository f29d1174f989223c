"""Trainer: loss falls, recall rises above chance, checkpoint round trip, resume, frozen parameters."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from heap_helpers import PAGES, faults_of_last_allocation

from core.embed import heap
from core.embed.heap import _glibc
from core.errors import Cancelled
from core.progress import Reporter
from core.train.freeze import apply_freeze
from core.train.setup import start_model
from core.train.trainer import TrainConfig, load_best, train
from core.train.validation import SplitData, evaluate

TINY = "capsearch-tiny"
FAST = TrainConfig(
    epochs=3, batch_size=32, lr=3e-3, warmup_steps=2, crop_scale=1.0, device="cpu", precision="fp32"
)


class Recorder(Reporter):
    """Keeps every train loss; cancels after ``cancel_at`` steps when set."""

    def __init__(self, cancel_at: int | None = None) -> None:
        super().__init__()
        self.losses: list[float] = []
        self.val: list[dict] = []
        self.cancel_at = cancel_at

    def update(self, stage: str, done: int, total: int | None = None, **info) -> None:
        if stage == "train":
            self.losses.append(info["loss"])
            if self.cancel_at is not None and done >= self.cancel_at:
                self.cancel()
        elif stage == "val":
            self.val.append(info)


def test_loss_falls_over_a_few_steps(synthetic_small, artifacts):
    rec = Recorder()
    cfg = dataclasses.replace(FAST, epochs=4)
    result = train(start_model(TINY), synthetic_small, artifacts / "m", cfg, rec)
    assert result.steps == len(rec.losses) >= 8
    assert sum(rec.losses[-3:]) / 3 < rec.losses[0] - 0.1
    assert len(result.curve) == 4 and len(rec.val) == 4
    assert {"t2i_R@1", "i2t_R@10", "mean_recall"} <= set(rec.val[0])


def test_min_steps_outlast_a_spent_time_budget(synthetic_small, artifacts):
    cfg = dataclasses.replace(FAST, epochs=4, time_budget_s=1e-6, min_steps=5)
    result = train(start_model(TINY), synthetic_small, artifacts / "m", cfg, Recorder())
    assert (result.steps, result.stopped) == (5, "time-budget")


@pytest.mark.skipif(_glibc() is None, reason="glibc's malloc only (this libc is not glibc)")
def test_large_activations_freed_during_training_are_reused(synthetic_small, artifacts):
    """Between steps, a large freed tensor (a batch's activations) stays in the heap for the next step
    instead of being unmapped and faulted in again page by page; the setting ends with the run."""

    class FaultCounter(Recorder):
        def __init__(self) -> None:
            super().__init__(cancel_at=3)
            self.faults: list[int] = []

        def update(self, stage: str, done: int, total: int | None = None, **info) -> None:
            super().update(stage, done, total, **info)
            if stage == "train":
                self.faults.append(faults_of_last_allocation())

    rec = FaultCounter()
    blocks = heap._depth
    with pytest.raises(Cancelled):
        train(start_model(TINY), synthetic_small, artifacts / "m", FAST, rec)
    assert len(rec.faults) == 3 and max(rec.faults) < PAGES // 10, rec.faults
    assert heap._depth == blocks  # the trainer's block ended with the run (its memory given back)


def test_recall_rises_well_above_chance(synthetic_small, artifacts):
    start = start_model("capsearch-compact-demo")
    apply_freeze(start.model, "frozen-text")  # caption features of the frozen text trunk are computed once
    seen = SplitData.load(start, synthetic_small, "train", torch.device("cpu"))
    before = evaluate(start.model, seen, torch.device("cpu"))
    cfg = TrainConfig(
        epochs=6,
        batch_size=16,
        lr=1e-3,
        warmup_steps=3,
        crop_scale=1.0,
        freeze="frozen-text",
        device="cpu",
        val_split="train",
    )
    result = train(start, synthetic_small, artifacts / "m", cfg)
    chance_r5 = 100 * 5 / len(synthetic_small.split("train"))
    assert before["text_to_image"]["R@5"] < 2 * chance_r5
    assert result.best_val["text_to_image"]["R@5"] > 2 * chance_r5 + 5
    assert result.best_val["mean_recall"] > before["mean_recall"] + 5


def test_checkpoint_round_trip(synthetic_small, artifacts):
    from core.models.loading import load_model

    start = start_model(TINY)
    out = artifacts / "models" / "tiny-rt"
    result = train(start, synthetic_small, out, dataclasses.replace(FAST, epochs=2))
    lm = load_model(str(out), device="cpu")
    assert lm.model_id == result.model_id
    load_best(start.model, out)
    start.model.eval()
    tokens = start.tokenizer(["a red circle on a white background"])
    image = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(lm.model.encode_text(tokens), start.model.encode_text(tokens), atol=1e-5)
        assert torch.allclose(lm.model.encode_image(image), start.model.encode_image(image), atol=1e-5)
    again = start_model(str(out))
    assert again.start_id == result.model_id


def test_resume_after_interruption_matches_an_uninterrupted_run(synthetic_small, artifacts):
    cfg = dataclasses.replace(FAST, epochs=2)
    full = train(start_model(TINY), synthetic_small, artifacts / "full", cfg)
    with pytest.raises(Cancelled):
        train(start_model(TINY), synthetic_small, artifacts / "cut", cfg, Recorder(cancel_at=3))
    assert (artifacts / "cut" / "last_state.pt").is_file()
    assert (artifacts / "cut" / "model.json").is_file()  # a valid checkpoint is left behind
    resumed = train(start_model(TINY), synthetic_small, artifacts / "cut", cfg)
    assert resumed.steps == full.steps
    a, b = start_model(TINY), start_model(TINY)
    load_best(a.model, artifacts / "full")
    load_best(b.model, artifacts / "cut")
    for (name, pa), pb in zip(a.model.state_dict().items(), b.model.state_dict().values(), strict=True):
        assert torch.allclose(pa, pb, atol=1e-5), name
    assert [r["mean_recall"] for r in resumed.curve] == pytest.approx(
        [r["mean_recall"] for r in full.curve], abs=1e-6
    )


def test_resume_refuses_other_arguments(synthetic_small, artifacts):
    from core.errors import CapsearchError

    cfg = dataclasses.replace(FAST, epochs=1)
    train(start_model(TINY), synthetic_small, artifacts / "m", cfg)
    with pytest.raises(CapsearchError, match="other training arguments"):
        train(start_model(TINY), synthetic_small, artifacts / "m", dataclasses.replace(cfg, lr=1e-4))


@pytest.mark.parametrize("policy", ["proj", "proj-norm", "last:1", "frozen-text"])
def test_frozen_parameters_are_unchanged_after_training(synthetic_small, artifacts, policy):
    from core.train.freeze import trainable_names

    start = start_model(TINY)
    before = {k: v.clone() for k, v in start.model.state_dict().items()}
    keep = trainable_names(start.model, policy)
    train(start, synthetic_small, artifacts / "m", dataclasses.replace(FAST, epochs=1, freeze=policy))
    after = start.model.state_dict()
    params = dict(start.model.named_parameters())
    frozen = [k for k in params if k not in keep]
    assert frozen and keep
    for k in frozen:
        assert torch.equal(before[k], after[k]), k
    assert any(not torch.equal(before[k], after[k]) for k in keep)


def test_freeze_policies_select_the_right_parameters():
    from core.errors import CapsearchError
    from core.train.freeze import trainable_names

    model = start_model(TINY).model
    assert trainable_names(model, "proj") == {"visual.proj", "text_projection"}
    last = trainable_names(model, "last:1")
    assert any(k.startswith("visual.transformer.resblocks.1.") for k in last)
    assert not any(k.startswith("visual.transformer.resblocks.0.") for k in last)
    assert not any(k.startswith("transformer.resblocks.0.") for k in last)
    assert "token_embedding.weight" not in last and "logit_scale" in last
    assert "token_embedding.weight" not in trainable_names(model, "frozen-text")
    for bad in ("last:0", "everything"):
        with pytest.raises(CapsearchError):
            trainable_names(model, bad)
