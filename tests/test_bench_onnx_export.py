"""scripts/bench_throughput.py's ONNX export of an image tower with nn.MultiheadAttention (a ViT)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from core.models.loading import load_model

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_throughput.py"


@pytest.fixture(scope="module")
def bench():
    pytest.importorskip("onnx", reason="the bench extra (onnx) is not installed")
    sys.path.insert(0, str(SCRIPT.parent))
    spec = importlib.util.spec_from_file_location("bench_throughput", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)
    sys.path.remove(str(SCRIPT.parent))


def test_a_vit_tower_exports_and_onnx_runtime_agrees_with_torch(bench, tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime", reason="the bench extra (onnxruntime) is not installed")
    lm = load_model("capsearch-tiny", device="cpu", precision="fp32")
    x = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    assert torch.backends.mha.get_fastpath_enabled()
    path = bench.export_onnx(lm, x, tmp_path)  # the fused MHA op has no ONNX form: the export turns it off
    assert torch.backends.mha.get_fastpath_enabled()  # and back on
    with torch.inference_mode():
        want = lm.model.encode_image(x).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"image": x.numpy()})[0]  # a batch of 3 through a graph traced with 2
    close = bench._close(got, want)
    assert close["max_abs_diff_to_torch_fp32"] < 1e-4 and close["min_cosine_to_torch_fp32"] > 0.99999
    assert not np.allclose(got[0], got[1])
