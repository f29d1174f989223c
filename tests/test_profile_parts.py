"""The benchmarks' diagnostics: profile_backends' blocks with parts left out, bench_throughput's roofline."""

from __future__ import annotations

import copy
import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import torch

from core.embed.engine import inference_model, input_shape
from core.embed.fp32_fast import image_input_dtype
from core.embed.packed import PackedBlock, pack_for_cpu
from core.models.loading import load_model

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


@pytest.fixture(scope="module")
def scripts() -> Iterator[dict[str, ModuleType]]:
    sys.path.insert(0, str(SCRIPTS))
    modules = {}
    for name in ("bench_throughput", "profile_backends"):
        spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
        assert spec is not None and spec.loader is not None
        modules[name] = importlib.util.module_from_spec(spec)
        sys.modules[name] = modules[name]
        spec.loader.exec_module(modules[name])
    yield modules
    for name in modules:
        sys.modules.pop(name, None)
    sys.path.remove(str(SCRIPTS))


@pytest.mark.parametrize("threads", [1, 2])  # one: the streams' thread, where the AMX attention can run
@pytest.mark.parametrize("kernel", ["fast copy", "mkl"])
def test_blocks_without_nothing_are_the_model_and_each_part_left_out_changes_it(
    scripts: dict[str, ModuleType], kernel: str, threads: int, request: pytest.FixtureRequest
) -> None:
    without = scripts["profile_backends"].blocks_without
    if kernel == "mkl":  # fp32fast on the kernel a probe may pick instead of oneDNN's
        lm = load_model("capsearch-tiny", device="cpu", precision="fp32")
        model = pack_for_cpu(copy.deepcopy(lm.model).eval(), onednn=False)
    else:
        lm = load_model("capsearch-tiny", device="cpu", precision="fast")
        model = inference_model(lm)
    if not any(isinstance(m, PackedBlock) for m in model.modules()):
        pytest.skip("this CPU's fast copy has no packed blocks")
    x = torch.randn(3, *input_shape(lm), generator=torch.Generator().manual_seed(0))
    x = x.to(image_input_dtype(model, lm.dtype))
    attend = PackedBlock.attend
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    request.addfinalizer(lambda: torch.set_num_threads(before))
    with torch.inference_mode():
        whole = model.encode_image(x)
        with without(frozenset()):
            assert torch.equal(model.encode_image(x), whole)  # the timing's "whole" is the model itself
        for part in ("attention", "layer_norm", "gelu"):
            with without(frozenset([part])):
                assert not torch.allclose(model.encode_image(x), whole, atol=1e-3), part
        assert PackedBlock.attend is attend and torch.equal(model.encode_image(x), whole)


def test_the_roofline_sets_each_pass_against_the_peak_read_beside_it(scripts: dict[str, ModuleType]) -> None:
    def side(passes: list[float], peaks: list[float]) -> dict[str, object]:
        return {
            "images_per_s": len(passes) / sum(1 / p for p in passes),  # over the mean wall time, as rates()
            "pass_images_per_s": passes,
            "adjacent_peak_gflop_per_s": peaks,
        }

    fp32 = side([10.0, 10.0], [100.0, 100.0])
    result = {
        "fast_format": "bf16",
        "end_to_end": {
            "naive_fp32": fp32,
            "naive_fp32_heap_reused": fp32,
            "engine_fp32": fp32,
            "engine_fast": side([40.0, 60.0], [800.0, 1000.0]),
        },
        "model_only": {"torch_fp32": {"images_per_s": 10.0}, "torch_fast": {"images_per_s": 60.0}},
    }
    rows = scripts["bench_throughput"].roofline(result, 5.0, 10.0, {"bf16": 1000.0, "fp32": 100.0})["paths"]
    fast = rows["engine_fast (end to end)"]
    assert fast["gflop_per_s"] == 480.0 and fast["of_peak"] == 0.48  # 48 images/s x 10 GFLOP of 1,000
    assert fast["of_adjacent_peak"] == 0.55  # (400 / 800 + 600 / 1,000) / 2
    assert rows["engine_fp32 (end to end)"]["of_adjacent_peak"] == 0.5
    assert "of_adjacent_peak" not in rows["torch_fast (model only)"]
    # a peak read beside a pass above the kernels' own is the run's peak
    lower = scripts["bench_throughput"].roofline(result, 5.0, 10.0, {"bf16": 900.0, "fp32": 100.0})
    assert lower["matmul_peak_gflop_per_s"] == {"bf16": 1000.0, "fp32": 100.0}
    assert lower["paths"]["torch_fast (model only)"]["of_peak"] == 0.6  # 60 images/s x 10 GFLOP of 1,000
