"""Which dataset and model the app opens when the command line leaves one out."""

from __future__ import annotations

import json
import os
import time

from core.models.catalogue import newest_trained_on
from core.progress import Reporter
from tui.session import Source, model_choices, resolve


def fake_checkpoint(root, name: str, dataset: str) -> str:
    folder = root / "models" / name
    folder.mkdir(parents=True)
    (folder / "model.json").write_text(json.dumps({"dataset": dataset, "model_cfg": {}}), encoding="utf-8")
    return str(folder)


def test_without_a_model_the_newest_one_trained_on_the_dataset_opens(artifacts, synthetic_small) -> None:
    older = fake_checkpoint(artifacts, "older", synthetic_small.name)
    newer = fake_checkpoint(artifacts, "newer", synthetic_small.name)
    fake_checkpoint(artifacts, "elsewhere", "flickr8k")
    now = time.time()
    os.utime(os.path.join(older, "model.json"), (now - 60, now - 60))
    assert str(newest_trained_on(synthetic_small.name)) == newer
    assert resolve(Source(dataset=str(synthetic_small.dir)), Reporter()) == (str(synthetic_small.dir), newer)
    assert newest_trained_on("no-such-dataset") is None


def test_a_given_dataset_and_model_are_used_as_they_are(artifacts) -> None:
    assert resolve(Source(dataset="d", model="m"), Reporter()) == ("d", "m")


def test_model_choices_list_checkpoints_and_configs(artifacts) -> None:
    path = fake_checkpoint(artifacts, "mine", "flickr8k")
    values = [value for _, value in model_choices()]
    assert path in values and "capsearch-tiny" in values and "ViT-B-32" in values
