"""`capsearch train` and `capsearch finetune` end to end on a tiny model (recall before/after printed)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import torch

from core.cli import build_parser
from core.cli.console import main


def _run(argv: list[str]) -> int:
    return main(build_parser(), argv)


def test_train_then_finetune_cli(synthetic_small, artifacts, capsys):
    common = ["--epochs", "1", "--batch-size", "32", "--crop-scale", "1", "--device", "cpu", "--json"]
    assert (
        _run(
            [
                "train",
                "--dataset",
                str(synthetic_small.dir),
                "--model",
                "capsearch-tiny",
                "--name",
                "t",
                *common,
            ]
        )
        == 0
    )
    trained = json.loads(capsys.readouterr().out)
    assert trained["model_id"].startswith("t@") and trained["steps"] >= 1
    argv = [
        "finetune",
        "--model",
        "t",
        "--dataset",
        str(synthetic_small.dir),
        "--alphas",
        "0",
        "1",
        "--lr",
        "1e-4",
    ]
    assert _run([*argv, *common]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["test_before"]["text_to_image"]["R@1"] >= 0 and "test_after" in summary
    assert [row["alpha"] for row in summary["wise_ft_curve"]] == [0.0, 1.0]
    assert (artifacts / "results" / f"finetune-{summary['name']}.json").is_file()
    assert (artifacts / "reports" / f"wise-ft-{summary['name']}.png").is_file()


def test_bad_arguments_are_one_line_errors(synthetic_small, artifacts, capsys):
    assert _run(["train", "--dataset", "no-such-dataset"]) == 2
    assert "no prepared dataset" in capsys.readouterr().err
    argv = ["train", "--dataset", str(synthetic_small.dir), "--model", "capsearch-tiny", "--freeze", "last:x"]
    assert _run(argv) == 2
    assert "bad freezing policy" in capsys.readouterr().err


def test_finetune_leaves_unset_options_to_the_recipe():
    """`capsearch finetune` without --lr/--epochs/--warmup/--patience uses the recipe's values (the lit
    heads' recipe differs from the full-model one), while given values still override it."""
    from core.cli.train_cmds import _overrides
    from core.train.lit_finetune import lit_config
    from core.train.recipes import recommended_config

    args = build_parser().parse_args(["finetune", "--model", "m", "--dataset", "d"])
    unset = _overrides(args)
    assert not {"lr", "epochs", "warmup_steps", "patience"} & unset.keys()
    assert recommended_config(**unset).lr == 1e-5

    start = SimpleNamespace(
        model=SimpleNamespace(logit_scale=torch.tensor(0.0))
    )  # lit_config reads only this

    assert lit_config(start, unset).lr == 2e-4  # type: ignore[arg-type]
    given = _overrides(
        build_parser().parse_args(["finetune", "--model", "m", "--dataset", "d", "--lr", "3e-4"])
    )
    assert recommended_config(**given).lr == 3e-4 and lit_config(start, given).lr == 3e-4  # type: ignore[arg-type]
