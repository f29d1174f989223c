"""Nothing loaded from artifacts can run code (hardening C1), and damaged torch files get a clear error (C10).

Each test plants a pickle whose ``__reduce__`` would create a marker file, then loads it through the
path a user reaches: the trainer's resume, a checkpoint folder, a ``--pretrained`` weights file.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
import torch

from core.errors import CapsearchError
from core.train.setup import start_model
from core.train.trainer import LAST_STATE, TrainConfig, train

TINY = "capsearch-tiny"
ONE_EPOCH = TrainConfig(
    epochs=1, batch_size=32, lr=3e-3, warmup_steps=2, crop_scale=1.0, device="cpu", precision="fp32"
)


class _Payload:
    """Unpickling this calls ``os.makedirs(marker)``: the file appearing means code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (str(self.marker),))


def plant(path: Path, marker: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": {}, "evil": _Payload(marker)}, path)


def test_resume_state_with_code_is_refused_and_never_run(synthetic_small, artifacts, tmp_path):
    out = artifacts / "models" / "planted"
    marker = tmp_path / "pwned"
    plant(out / LAST_STATE, marker)
    with pytest.raises(CapsearchError, match="could run code") as err:
        train(start_model(TINY), synthetic_small, out, ONE_EPOCH)
    assert not marker.exists()
    assert "--restart" in str(err.value) and "weights_only" not in str(err.value)


def test_truncated_resume_state_says_restart(synthetic_small, artifacts):
    out = artifacts / "models" / "cut"
    train(start_model(TINY), synthetic_small, out, ONE_EPOCH)
    state = out / LAST_STATE
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
    with pytest.raises(CapsearchError, match="damaged or truncated") as err:
        train(start_model(TINY), synthetic_small, out, dataclasses.replace(ONE_EPOCH))
    assert "--restart" in str(err.value)
    restarted = train(start_model(TINY), synthetic_small, out, ONE_EPOCH, resume=False)
    assert restarted.steps > 0


@pytest.mark.parametrize("suffix", [".pt", ".bin"])
def test_pretrained_weights_file_with_code_is_refused(tmp_path, suffix):
    from core.models.loading import load_model

    marker = tmp_path / "pwned"
    weights = tmp_path / f"evil{suffix}"
    plant(weights, marker)
    with pytest.raises(CapsearchError, match="could run code") as err:
        load_model(TINY, pretrained=str(weights), device="cpu")
    assert not marker.exists()
    assert "weights_only" not in str(err.value)
