"""Model loading: seeded random init, weight files, checkpoint dirs, clear errors, device/precision choice."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import open_clip
import pytest
import torch
from safetensors.torch import save_file

from core.errors import ModelError, WeightsUnavailableError
from core.models.checkpoint import file_sha256, save_checkpoint_dir
from core.models.device import resolve_device, resolve_precision
from core.models.loading import LoadedModel, load_model

TINY = "capsearch-tiny"


def _outputs(lm: LoadedModel) -> tuple[torch.Tensor, torch.Tensor]:
    image = torch.linspace(-1, 1, 3 * 64 * 64).reshape(1, 3, 64, 64)
    with torch.inference_mode():
        return lm.model.encode_image(image), lm.model.encode_text(lm.tokenizer(["a red square on grass"]))


def _perturbed_state(lm: LoadedModel) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return {k: v + 0.01 * torch.randn(v.shape, generator=gen) for k, v in lm.model.state_dict().items()}


def _same_state(a: torch.nn.Module, b: dict[str, torch.Tensor]) -> bool:
    sa = a.state_dict()
    return sa.keys() == b.keys() and all(torch.equal(sa[k].cpu(), b[k].cpu()) for k in sa)


def test_builtin_config_is_registered_and_tiny() -> None:
    assert TINY in open_clip.list_models()
    cfg = open_clip.get_model_config(TINY)
    assert cfg["embed_dim"] == 64 and cfg["vision_cfg"]["image_size"] == 64


def test_random_init_is_seeded_and_leaves_the_global_rng_alone(tiny_model: LoadedModel) -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    again = load_model(TINY, device="cpu")
    assert torch.equal(torch.rand(3), expected)
    assert again.model_id == tiny_model.model_id == f"{TINY}@random"
    assert _same_state(again.model, tiny_model.model.state_dict())
    assert again.embed_dim == 64 and again.context_length == 77 and not again.model.training


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_local_weights_file_round_trip(tmp_path: Path, tiny_model: LoadedModel, suffix: str) -> None:
    state = _perturbed_state(tiny_model)
    path = tmp_path / f"tiny{suffix}"
    if suffix == ".pt":
        torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    else:
        save_file(state, str(path))
    lm = load_model(TINY, pretrained=str(path), device="cpu")
    assert lm.model_id == f"{TINY}@{file_sha256(path)[:12]}"
    assert lm.pretrained == str(path)
    assert _same_state(lm.model, state)
    assert not torch.equal(_outputs(lm)[1], _outputs(tiny_model)[1])


def test_checkpoint_dir_round_trip(artifacts: Path) -> None:
    trained = load_model(TINY, device="cpu")
    trained.model.load_state_dict(state := _perturbed_state(trained))
    folder = artifacts / "models" / "my-tiny"
    cfg = open_clip.get_model_config(TINY)
    model_id = save_checkpoint_dir(folder, trained.model, cfg, {"epochs": 3})
    expected = _outputs(trained)
    meta = json.loads((folder / "model.json").read_text())
    assert model_id == meta["model_id"] == f"my-tiny@{file_sha256(folder / 'model.safetensors')[:12]}"
    assert meta["epochs"] == 3 and meta["model_cfg"] == cfg
    for name in (str(folder), "my-tiny"):  # a path, or a dir under models/
        lm = load_model(name, device="cpu")
        assert lm.model_id == model_id and lm.name == "my-tiny"
        assert _same_state(lm.model, state)
        for got, want in zip(_outputs(lm), expected, strict=True):
            assert torch.allclose(got, want, atol=1e-6)


def test_checkpoint_dir_with_custom_text_tower(tmp_path: Path) -> None:
    cfg = {**open_clip.get_model_config(TINY), "custom_text": True}
    with torch.random.fork_rng():
        torch.manual_seed(5)
        model = open_clip.CustomTextCLIP(**{k: v for k, v in cfg.items() if k != "custom_text"})
    model_id = save_checkpoint_dir(tmp_path / "custom", model, cfg, {})
    lm = load_model(str(tmp_path / "custom"), device="cpu")
    assert isinstance(lm.model, open_clip.CustomTextCLIP) and lm.model_id == model_id
    assert _same_state(lm.model, model.state_dict())


def test_checkpoint_whose_weights_changed_is_refused(tmp_path: Path, tiny_model: LoadedModel) -> None:
    folder = tmp_path / "ckpt"
    save_checkpoint_dir(folder, tiny_model.model, open_clip.get_model_config(TINY), {})
    save_file(_perturbed_state(tiny_model), str(folder / "model.safetensors"))
    with pytest.raises(ModelError, match="inconsistent"):
        load_model(str(folder), device="cpu")


def test_offline_pretrained_tag_gives_the_ways_out() -> None:
    with pytest.raises(WeightsUnavailableError) as info:
        load_model("ViT-B-32", pretrained="openai", device="cpu")
    err = info.value
    assert "ViT-B-32@openai" in err.message
    assert "online" in err.hint and "--pretrained PATH" in err.hint and "capsearch-tiny" in err.hint


def test_missing_weights_file_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(WeightsUnavailableError, match="does not exist"):
        load_model(TINY, pretrained=str(tmp_path / "nope.pt"), device="cpu")


def test_unreadable_or_mismatched_weights_are_clear_errors(tmp_path: Path, tiny_model: LoadedModel) -> None:
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="cannot read weights"):
        load_model(TINY, pretrained=str(junk), device="cpu")
    partial = dict(tiny_model.model.state_dict())
    partial.pop("text_projection")
    path = tmp_path / "partial.safetensors"
    save_file({k: v.contiguous() for k, v in partial.items()}, str(path))
    with pytest.raises(ModelError, match="1 missing keys"):
        load_model(TINY, pretrained=str(path), device="cpu")


def test_unknown_names_and_tags_are_model_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="unknown model 'ViT-B-23'") as info:
        load_model("ViT-B-23", device="cpu")
    assert "ViT-B-32" in info.value.hint
    with pytest.raises(ModelError, match="no pretrained tag 'nonsense'") as info:
        load_model("ViT-B-32", pretrained="nonsense", device="cpu")
    assert "openai" in info.value.hint
    with pytest.raises(ModelError, match="not a capsearch checkpoint"):
        load_model(str(tmp_path), device="cpu")


def test_device_and_precision_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setenv("CAPSEARCH_DEVICE", "cpu")
    assert resolve_device(None) == torch.device("cpu")
    with pytest.raises(ModelError, match="unknown device"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ModelError, match="no CUDA GPU"):
            resolve_device("cuda")
    cpu = torch.device("cpu")
    assert resolve_precision(cpu, "fp32") == "fp32"
    assert resolve_precision(cpu, "auto") == "fp32"  # exact by default on the CPU
    with pytest.raises(ModelError, match="not supported on the CPU"):
        resolve_precision(cpu, "fp16")
    with pytest.raises(ModelError, match="unknown precision"):
        resolve_precision(cpu, "int4")
    lm = load_model(TINY, device="cpu", precision="fp32")
    assert lm.precision == "fp32" and lm.dtype == torch.float32


def test_one_precision_rule_for_inference_and_training(monkeypatch: pytest.MonkeyPatch) -> None:
    from core.models.device import TRAINING_DEFAULT, fast_format, training_autocast

    cpu = torch.device("cpu")
    monkeypatch.delenv("CAPSEARCH_PRECISION", raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    assert fast_format(cpu) == "bf16"
    assert resolve_precision(cpu, None) == "fp32"  # inference and evaluation: exact unless asked
    assert resolve_precision(cpu, "auto", TRAINING_DEFAULT) == "bf16"  # training: mixed precision
    assert resolve_precision(cpu, "fp32", TRAINING_DEFAULT) == "fp32"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # native bf16: no warning
        assert resolve_precision(cpu, "bf16") == "bf16"
    monkeypatch.setenv("CAPSEARCH_PRECISION", "fast")  # stands in for a precision not given, on every path
    assert resolve_precision(cpu, None) == "bf16" and resolve_precision(cpu, "fp32") == "fp32"
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    assert resolve_precision(cpu, "fast") == "fp32fast"  # no native bf16: fp32 through the fast path
    with pytest.warns(RuntimeWarning, match="emulated"):  # still available when asked by name, with a warning
        assert resolve_precision(cpu, "bf16") == "bf16"
    assert resolve_precision(cpu, "fp32fast") == "fp32fast"
    with training_autocast(cpu, "fp32fast"):  # training has no fast path of its own: plain fp32
        assert not torch.is_autocast_enabled("cpu")
    with training_autocast(cpu, "bf16"):
        assert torch.is_autocast_enabled("cpu")
    with training_autocast(cpu, "fp32"):
        assert not torch.is_autocast_enabled("cpu")
