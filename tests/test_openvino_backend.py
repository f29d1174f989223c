"""The OpenVINO image backend (``--backend openvino``): the torch engine's vectors to float rounding in fp32,
a converted-tower cache that is reused only while it matches, the CLI flag end to end, and a one-line
error naming the extra when OpenVINO is missing."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from library_helpers import make_folder

from core.cli import main
from core.embed import openvino_backend as ovb
from core.embed.engine import encode_images, input_shape
from core.embed.signal_stack import current_signal_stack
from core.errors import CapsearchError
from core.models.loading import load_model

pytest.importorskip("openvino")

# Measured on the tiny, compact and ViT-B-32 models: at most 2.1e-7 on L2-normalised fp32 vectors.
FP32_MAX_ABS = 1e-5
# bf16 (where the CPU has it; f32 elsewhere) against torch fp32: measured >= 0.99996 on the tiny model.
BF16_MIN_COSINE = 0.999
MODEL = ["--model", "capsearch-tiny", "--device", "cpu", "--precision", "fp32"]


@pytest.fixture(scope="module")
def images(synthetic_small):
    return [synthetic_small.image_path(r) for r in synthetic_small.split("test")[:24]]


def test_vectors_equal_the_torch_engines(tiny_model, images) -> None:
    torch_vectors, torch_failed = encode_images(tiny_model, images, batch_size=10)
    ov_vectors, ov_failed = encode_images(tiny_model, images, batch_size=10, backend="openvino")
    assert ov_failed == torch_failed == []
    assert np.abs(ov_vectors - torch_vectors).max() <= FP32_MAX_ABS
    assert np.allclose(np.linalg.norm(ov_vectors, axis=1), 1.0, atol=1e-5)

    fast = load_model("capsearch-tiny", device="cpu", precision="bf16")
    fast_vectors, _ = encode_images(fast, images, batch_size=10, backend="openvino")
    assert np.einsum("nd,nd->n", fast_vectors, torch_vectors).min() >= BF16_MIN_COSINE


def test_compiling_leaves_the_threads_signal_stack_as_it_was(tiny_model, images) -> None:
    """OpenVINO's compile_model sets an alternate signal stack of its own on the calling thread; kept, it
    crashed the process at a later signal once OpenVINO released it (core.embed.signal_stack)."""
    before = current_signal_stack()
    ovb._COMPILED.pop(tiny_model.model, None)  # compile afresh
    encode_images(tiny_model, images[:4], batch_size=4, backend="openvino")
    assert current_signal_stack() == before
    assert subprocess.run([sys.executable, "-c", "pass"], check=False).returncode == 0  # a SIGCHLD


def test_converted_tower_is_cached_and_converted_again_when_stale(
    artifacts, images, monkeypatch: pytest.MonkeyPatch
) -> None:
    import openvino as ov

    lm = load_model("capsearch-tiny", device="cpu", precision="fp32")
    first, _ = encode_images(lm, images[:4], backend="openvino")
    folder = ovb.ir_folder(lm.model_id)
    assert json.loads((folder / ovb.META).read_text())["weights_sha256"] == ovb.weights_digest(lm.model)

    def no_conversion(*args: object) -> None:
        raise AssertionError("converted again although the cache is valid")

    monkeypatch.setattr(ovb, "_convert", no_conversion)
    again = load_model("capsearch-tiny", device="cpu", precision="fp32")  # as a fresh process sees it
    assert np.array_equal(encode_images(again, images[:4], backend="openvino")[0], first)

    shape = input_shape(again)
    expected = ovb._expected_meta(ov, again, shape)
    assert ovb._load_cached(ov, folder, expected) is not None
    with torch.no_grad():  # new weights under the same model id: the old IR is not theirs
        next(again.model.visual.parameters()).mul_(1.5)
    assert ovb._load_cached(ov, folder, ovb._expected_meta(ov, again, shape)) is None
    assert ovb._load_cached(ov, folder, {**expected, "openvino": "0.0"}) is None
    (folder / ovb.BIN).write_bytes(b"damaged")
    assert ovb._load_cached(ov, folder, expected) is None


def test_cli_embed_and_library_with_openvino(
    tmp_path, artifacts, synthetic_small, capsys: pytest.CaptureFixture[str]
) -> None:
    dataset = ["--dataset", str(synthetic_small.dir), "--split", "test"]
    assert main(["embed", *dataset, *MODEL, "--backend", "openvino", "--json"]) == 0
    row = json.loads(capsys.readouterr().out)[0]
    assert row["backend"] == "openvino" and row["images"] > 0 and not row["reused"]
    vectors = np.load(f"{row['cache_dir']}/image_emb.npy", allow_pickle=False)
    lm = load_model("capsearch-tiny", device="cpu", precision="fp32")
    paths = [synthetic_small.image_path(r) for r in synthetic_small.split("test")]
    assert np.abs(vectors - encode_images(lm, paths)[0]).max() <= FP32_MAX_ABS

    photos = tmp_path / "photos"
    files = make_folder(photos, 6)
    assert main(["library", "add", str(photos), *MODEL, "--backend", "openvino"]) == 0
    assert "6 embedded" in capsys.readouterr().err
    # an image query (encoded by torch) finds its own file, whose vector OpenVINO made, at cosine ~1
    assert main(["search", "--image", str(files[3]), "--json", "-k", "1"]) == 0
    hit = json.loads(capsys.readouterr().out)["hits"][0]
    assert hit["path"] == str(files[3]) and hit["score"] == pytest.approx(1.0, abs=1e-4)


def test_openvino_with_ray_is_refused(artifacts, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["embed", "--engine", "ray", "--backend", "openvino", "--dataset", "x", *MODEL]
    assert main(argv) == 2
    assert "--backend openvino applies to --engine local" in capsys.readouterr().err


@pytest.fixture
def no_openvino(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [m for m in sys.modules if m == "openvino" or m.startswith("openvino.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` now raises ImportError


def test_missing_openvino_is_one_clear_line(
    no_openvino: None, tmp_path, artifacts, tiny_model, images, capsys: pytest.CaptureFixture[str]
) -> None:
    message = "OpenVINO is not installed: pip install 'capsearch[openvino]'"
    with pytest.raises(ovb.OpenVINOMissingError, match=r"pip install 'capsearch\[openvino\]'"):
        encode_images(tiny_model, images[:2], backend="openvino")

    assert main(["embed", "--dataset", "not-prepared", *MODEL, "--backend", "openvino"]) == 2
    err = capsys.readouterr().err
    assert message in err and "not-prepared" not in err  # said before any work

    make_folder(tmp_path / "photos", 2)
    assert main(["library", "add", str(tmp_path / "photos"), *MODEL, "--backend", "openvino"]) == 2
    assert message in capsys.readouterr().err
    assert main(["library", "list"]) == 0
    assert "photos" not in capsys.readouterr().out  # said before the library was made
    assert encode_images(tiny_model, images[:2])[0].shape == (2, tiny_model.embed_dim)  # torch still works


def test_openvino_off_the_cpu_is_refused(tiny_model) -> None:
    on_gpu = dataclasses.replace(tiny_model, device=torch.device("cuda"))
    with pytest.raises(CapsearchError, match="--backend openvino runs on the CPU, not on cuda"):
        ovb.check_backend(on_gpu, "openvino")
    ovb.check_backend(on_gpu, "torch")


@pytest.mark.parametrize("command", [["embed"], ["library", "add"], ["library", "update"]])
def test_help_names_the_extra(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main([*command, "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--backend {torch,openvino}" in help_text and "pip install 'capsearch[openvino]'" in help_text


def test_only_bf16_vectors_get_the_bf16_hint() -> None:
    ov = ovb.import_openvino()
    bf16 = "bf16" if "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES") else "f32"
    hints = [ovb.precision_hint(ov, label) for label in ("fp32", "fp32fast", "bf16")]
    assert hints == ["f32", "f32", bf16]  # a convolutional tower's fast mode stays f32, as in torch
