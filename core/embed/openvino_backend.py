"""OpenVINO as an optional image backend (``--backend openvino``): the loaded model's image tower, run by
OpenVINO's CPU plugin instead of torch.

The tower (``model.encode_image`` of the fp32 model) is converted in memory with ``openvino.convert_model``
from the torch module and an example batch (no ONNX file), its batch dimension left dynamic. The converted
model is kept as OpenVINO IR (``.xml`` graph + ``.bin`` weights: data, never code) in
``<artifacts>/cache/openvino/<model-id>/``, written atomically under the folder's lock with a ``meta.json``
that holds the OpenVINO version, a digest of the tower's weights and the SHA-256 of both files; a cache
whose meta, weights or files do not match is converted again. The IR holds the fp32 graph for every
precision: the number format is a compile-time hint, so one conversion serves fp32 and fast.

It is compiled for the CPU with the throughput hint and the engine's precision as the inference precision
hint (fp32 -> ``f32``; bf16 -> ``bf16`` where the CPU has native bf16, else ``f32``), and each batch is split
over the plugin's streams (an ``AsyncInferQueue`` of its optimal number of requests). Outputs are
unnormalised features, as ``encode_image``'s; the engine normalises them. OpenVINO is an optional extra,
imported only here: without it :func:`import_openvino` raises :class:`OpenVINOMissingError`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
import weakref
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from core.atomic import file_sha256, temp_prefix, write_json, writing_to
from core.embed.engine import input_shape
from core.embed.fp32_fast import vectors_label
from core.embed.signal_stack import restored_signal_stack
from core.errors import CapsearchError
from core.locks import exclusive
from core.models.checkpoint import ClipModel
from core.models.loading import LoadedModel
from core.paths import artifacts_root, safe_name

Backend = Literal["torch", "openvino"]
BACKENDS: tuple[Backend, ...] = ("torch", "openvino")
INSTALL_HINT = "pip install 'capsearch[openvino]'"
IR_FORMAT = 1  # bump when the conversion changes, so that older caches are converted again
XML, BIN, META = "image_tower.xml", "image_tower.bin", "meta.json"
_EXAMPLE_BATCH = 2


class OpenVINOMissingError(CapsearchError):
    """The OpenVINO backend was asked for but OpenVINO is not installed."""


def import_openvino() -> ModuleType:
    """The ``openvino`` module, or :class:`OpenVINOMissingError` saying how to install it."""
    try:
        import openvino
    except ImportError as exc:
        raise OpenVINOMissingError(
            f"OpenVINO is not installed: {INSTALL_HINT}",
            hint="or embed with torch (--backend torch, the default)",
        ) from exc
    return openvino


def check_backend(lm: LoadedModel, backend: Backend) -> None:
    """Raise a one-line error when ``backend`` cannot run ``lm`` here (missing package, not on the CPU)."""
    if backend == "torch":
        return
    import_openvino()
    if lm.device.type != "cpu":
        raise CapsearchError(
            f"--backend openvino runs on the CPU, not on {lm.device.type}",
            hint="add --device cpu, or use --backend torch",
        )


# -- conversion and its cache -------------------------------------------------------------------------------
class _ImageTower(nn.Module):
    """``encode_image`` of a CLIP model as a module's forward, for the converter."""

    def __init__(self, model: ClipModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(x)


def ir_folder(model_id: str) -> Path:
    """Where the converted image tower of ``model_id`` is cached."""
    return artifacts_root() / "cache" / "openvino" / safe_name(model_id)


def weights_digest(model: ClipModel) -> str:
    """SHA-256 over the image tower's tensors (names, shapes, dtypes, bytes): a stale cache never loads,
    even for a model whose weights changed under the same id."""
    digest = hashlib.sha256()
    tower = getattr(model, "visual", model)
    for name, tensor in tower.state_dict().items():
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}|{tuple(tensor.shape)}|{tensor.dtype}".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b"")
    return digest.hexdigest()


def _convert(ov: ModuleType, lm: LoadedModel, shape: tuple[int, ...]) -> Any:
    example = torch.randn(_EXAMPLE_BATCH, *shape)
    with torch.no_grad(), warnings.catch_warnings():  # the tracer's deprecation and tracer warnings
        warnings.simplefilter("ignore")
        return ov.convert_model(_ImageTower(lm.model).eval(), example_input=example, input=[(-1, *shape)])


def _expected_meta(ov: ModuleType, lm: LoadedModel, shape: tuple[int, ...]) -> dict[str, Any]:
    return {
        "format": IR_FORMAT,
        "model_id": lm.model_id,
        "openvino": ov.__version__,
        "input_shape": list(shape),
        "weights_sha256": weights_digest(lm.model),
    }


def _load_cached(ov: ModuleType, folder: Path, expected: dict[str, Any]) -> Any | None:
    """The cached IR when its meta and files match ``expected``; None otherwise."""
    try:
        meta = json.loads((folder / META).read_text(encoding="utf-8"))
        if not isinstance(meta, dict) or any(meta.get(k) != v for k, v in expected.items()):
            return None
        if file_sha256(folder / XML) != meta.get("xml_sha256"):
            return None
        if file_sha256(folder / BIN) != meta.get("bin_sha256"):
            return None
    except (OSError, ValueError):
        return None
    return ov.Core().read_model(str(folder / XML), str(folder / BIN))


def _save(ov: ModuleType, model: Any, folder: Path, meta: dict[str, Any]) -> None:
    """Write the IR into a temporary folder beside the cache, move both files in, then the meta (last, so
    that it only ever names files that are complete)."""
    with writing_to(folder):
        tmp = Path(tempfile.mkdtemp(prefix=temp_prefix("ir"), dir=folder))
        try:
            (folder / META).unlink(missing_ok=True)
            ov.save_model(model, str(tmp / XML), compress_to_fp16=False)  # keep the fp32 weights exact
            sums = {"xml_sha256": file_sha256(tmp / XML), "bin_sha256": file_sha256(tmp / BIN)}
            for name in (BIN, XML):
                os.replace(tmp / name, folder / name)
            write_json(folder / META, {**meta, **sums})
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def converted_tower(lm: LoadedModel) -> Any:
    """The ``openvino.Model`` of ``lm``'s image tower: from the cache when valid, else converted and cached."""
    ov = import_openvino()
    shape = input_shape(lm)
    folder = ir_folder(lm.model_id)
    expected = _expected_meta(ov, lm, shape)
    with exclusive(folder):
        model = _load_cached(ov, folder, expected)
        if model is None:
            model = _convert(ov, lm, shape)
            _save(ov, model, folder, expected)
    return model


# -- inference ----------------------------------------------------------------------------------------------
def precision_hint(ov: ModuleType, label: str) -> str:
    """OpenVINO's inference precision for what the engine's vectors are computed in
    (:func:`core.embed.fp32_fast.vectors_label`): bf16 only for bf16 and where the CPU has it natively; a
    convolutional tower's fast mode stays f32, as the torch path does (bf16 drifted there)."""
    if label != "bf16":
        return "f32"
    capabilities = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    return "bf16" if "BF16" in capabilities else "f32"


class OpenVINOImageEncoder:
    """A compiled image tower: a float batch in, unnormalised float32 features out (``encode_image``'s)."""

    def __init__(self, compiled: Any, hint: str) -> None:
        ov = import_openvino()
        self.hint = hint
        self.requests = max(1, int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))
        self.queue = ov.AsyncInferQueue(compiled, self.requests)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Features of ``x`` ``[n, C, H, W]`` (any float dtype), the batch split over the streams."""
        images = np.ascontiguousarray(x.detach().to(torch.float32).cpu().numpy())
        parts = np.array_split(images, min(self.requests, len(images)))
        outs: list[np.ndarray] = [np.empty(0, np.float32)] * len(parts)

        def done(request: Any, i: int) -> None:
            outs[i] = request.get_output_tensor(0).data.copy()

        self.queue.set_callback(done)
        for i, part in enumerate(parts):
            self.queue.start_async({0: part}, userdata=i)
        self.queue.wait_all()
        return torch.from_numpy(np.concatenate(outs).astype(np.float32, copy=False))


@dataclass(frozen=True)
class _Compiled:
    key: tuple[Any, ...]
    encoder: OpenVINOImageEncoder


_COMPILED: weakref.WeakKeyDictionary[ClipModel, _Compiled] = weakref.WeakKeyDictionary()


def compile_on_cpu(ov: ModuleType, model: Any, config: dict[str, str]) -> Any:
    """``ov.Core().compile_model(model, "CPU", config)`` (a model or a model file's path), leaving the
    calling thread's alternate signal stack as it was: compile_model sets one of its own
    (:mod:`core.embed.signal_stack`)."""
    with restored_signal_stack():
        return ov.Core().compile_model(model, "CPU", config)


def openvino_image_encoder(lm: LoadedModel) -> OpenVINOImageEncoder:
    """``lm``'s image tower compiled for the CPU in its precision (kept per model while the weights and the
    precision stay the same; see the module docstring)."""
    ov = import_openvino()
    check_backend(lm, "openvino")
    hint = precision_hint(ov, vectors_label(lm))
    key = (lm.model_id, hint, *((p.data_ptr(), p._version) for p in lm.model.parameters()))
    cached = _COMPILED.get(lm.model)
    if cached is not None and cached.key == key:
        return cached.encoder
    compiled = compile_on_cpu(
        ov, converted_tower(lm), {"PERFORMANCE_HINT": "THROUGHPUT", "INFERENCE_PRECISION_HINT": hint}
    )
    encoder = OpenVINOImageEncoder(compiled, hint)
    _COMPILED[lm.model] = _Compiled(key, encoder)
    return encoder
