"""The per-machine engine plan (probe, atomic cache, reuse), the fast image path and JPEG draft decoding."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from core.data.images import draft_size, load_rgb
from core.embed import engine, tuning
from core.embed.engine import decode_min_side, encode_images, engine_plan, inference_model
from core.embed.packed import packing_available, takes_pixels
from core.models.loading import LoadedModel, load_model


@pytest.fixture(scope="module")
def tiny32() -> LoadedModel:
    return load_model("capsearch-tiny", device="cpu", precision="fp32")


@pytest.fixture(scope="module")
def tiny_bf16() -> LoadedModel:
    return load_model("capsearch-tiny", device="cpu", precision="bf16")


def _photos(folder: Path, n: int, size: tuple[int, int]) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        small = rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)  # smooth content, like a photo
        path = folder / f"photo{i}.jpg"
        Image.fromarray(small).resize(size, Image.Resampling.BILINEAR).save(path, quality=92)
        paths.append(path)
    return paths


def test_probe_is_cached_atomically_and_reused(
    artifacts: Path, tiny_bf16: LoadedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = engine_plan(tiny_bf16)
    assert plan.probed and plan.batch_size in tuning.BATCH_SIZES and plan.threads >= 1
    cache = tuning.probe_file()
    assert cache.is_relative_to(artifacts)
    stored = json.loads(cache.read_text())["plans"]
    assert len(stored) == 1 and next(iter(stored.values()))["batch_size"] == plan.batch_size
    assert [p.name for p in cache.parent.iterdir()] == [cache.name]  # no temporary file left behind

    def no_probe(*args: object, **kwargs: object) -> tuning.ImagePlan:
        raise AssertionError("the cached plan should have been reused")

    monkeypatch.setattr(tuning, "probe_images", no_probe)
    again = engine_plan(tiny_bf16)
    assert (again.batch_size, again.threads, again.channels_last) == (
        plan.batch_size,
        plan.threads,
        plan.channels_last,
    )


def test_unreadable_cache_is_probed_again_and_probe_can_be_turned_off(
    artifacts: Path, tiny32: LoadedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tuning.probe_file()
    cache.parent.mkdir(parents=True)
    cache.write_text("{not json")
    assert engine_plan(tiny32).probed
    assert json.loads(cache.read_text())["plans"]  # rewritten whole
    monkeypatch.setattr(tuning, "probe_images", None)  # a cached plan or the default: never a probe
    assert tuning.image_plan("another model", torch.nn.Identity(), (3, 8, 8), torch.float32, probe=False) == (
        tuning.DEFAULT_PLAN
    )
    monkeypatch.setenv(tuning.PROBE_ENV, "0")
    assert engine_plan(tiny32) == tuning.DEFAULT_PLAN


def test_probe_keeps_fp32_layout_and_picks_a_measured_setting() -> None:
    calls: list[tuple[int, bool]] = []

    def encode(x: torch.Tensor) -> torch.Tensor:
        calls.append((x.shape[0], x.is_contiguous(memory_format=torch.channels_last)))
        return x.flatten(1).sum(1)

    plan = tuning.probe_images(encode, (3, 8, 8), torch.float32, layouts=False)
    assert not plan.channels_last and plan.images_per_s > 0
    assert not any(cl for n, cl in calls if n > 1)  # fp32 never tries another layout


@pytest.mark.parametrize(("slowdown", "chosen"), [(1.0, 64), (2.0, 16)])
def test_a_larger_batch_is_kept_unless_it_is_slower(slowdown: float, chosen: int) -> None:
    busy = threading.Lock()  # one call at a time, as a model on every core: concurrent streams never win

    def encode(x: torch.Tensor) -> torch.Tensor:  # 2 ms a call, 0.5 ms an image; larger batches `slowdown` x
        n = x.shape[0]
        with busy:
            time.sleep(0.002 + n * 0.0005 * (slowdown if n > 16 else 1.0))
        return x.flatten(1).sum(1)

    assert tuning.probe_images(encode, (3, 8, 8), torch.float32, layouts=False).batch_size == chosen


def test_probe_settings_take_turns_and_each_counts_its_best_call() -> None:
    order: list[int] = []

    def encode(x: torch.Tensor) -> torch.Tensor:
        order.append(len(x))
        time.sleep(0.05 if order.count(len(x)) == 2 else 0.001)  # each setting's first timed call is slow
        return x

    rates = tuning._best_rates(encode, {n: (torch.zeros(n, 1), 1) for n in (1, 2)})
    assert order == [1, 2] * (tuning.MAX_TIMED_CALLS + 1)  # a warm-up round, then timed rounds in turn
    assert rates[1] > 100 and rates[2] > 200  # the best call (about 1 ms), not the slow one (50 ms)


def test_fast_path_matches_fp32_within_tolerance(
    artifacts: Path, tmp_path: Path, tiny32: LoadedModel, tiny_bf16: LoadedModel
) -> None:
    # 1200x900 JPEGs: the fast path decodes them at a reduced scale and runs a bf16, channels-last copy
    paths = _photos(tmp_path, 5, (1200, 900))
    engine_plan(tiny32), engine_plan(tiny_bf16)  # probed now: 5 images alone would not start a probe
    exact, failed = encode_images(tiny32, paths)
    fast, failed_fast = encode_images(tiny_bf16, paths)
    assert not failed and not failed_fast
    cosine = np.einsum("nd,nd->n", exact, fast)
    assert cosine.min() > 0.99  # stated tolerance: bf16 weights and activations plus DCT-scaled decoding
    same, _ = encode_images(tiny32, paths, batch_size=2)
    assert np.abs(same - exact).max() < 1e-5  # the exact mode does not depend on the batch size


def test_draft_decode_keeps_the_output_size(tmp_path: Path, tiny32: LoadedModel) -> None:
    (path,) = _photos(tmp_path, 1, (2000, 1500))
    full = load_rgb(path)
    drafted = load_rgb(path, min_side=224)
    assert full.size == (2000, 1500)
    assert min(drafted.size) >= 224 and drafted.size[0] < 1000  # decoded at 1/4 scale: 500x375
    a, b = tiny32.preprocess(full), tiny32.preprocess(drafted)
    assert a.shape == b.shape
    assert (a - b).abs().mean() < 0.05
    assert load_rgb(path, min_side=1000).size == (2000, 1500)  # no reduction below the short side asked
    assert draft_size((4032, 3024), 224) == (299, 224)


def test_draft_only_in_the_fast_formats(tiny32: LoadedModel, tiny_bf16: LoadedModel) -> None:
    fp32fast = load_model("capsearch-tiny", device="cpu", precision="fp32fast")
    assert decode_min_side(tiny32, (3, 64, 64)) is None
    assert decode_min_side(tiny_bf16, (3, 64, 64)) == 64
    assert decode_min_side(fp32fast, (3, 64, 64)) == 64


def test_split_preprocessing_is_bit_identical(tmp_path: Path, tiny32: LoadedModel) -> None:
    from core.embed.engine import _SplitPreprocess

    split = _SplitPreprocess(tiny32.preprocess)
    assert split.split  # open_clip's Compose ends in ToTensor + Normalize
    images = [load_rgb(p) for p in _photos(tmp_path, 3, (300, 200))]
    batch = split.finish(torch.stack([split(im) for im in images]))
    assert torch.equal(batch, torch.stack([tiny32.preprocess(im) for im in images]))


@pytest.mark.skipif(not packing_available(torch.bfloat16), reason="this CPU cannot pack bf16 weights")
def test_files_at_the_input_size_reach_the_model_as_decoded_pixels(
    tmp_path: Path, tiny32: LoadedModel, tiny_bf16: LoadedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    at_size, other = _photos(tmp_path / "a", 5, (64, 64)), _photos(tmp_path / "b", 3, (90, 60))
    paths = at_size + other
    decoded: list[Path] = []
    real = engine.upright_jpeg_pixels

    def counted(path: Path, size: tuple[int, int]) -> np.ndarray | None:
        pixels = real(path, size)
        if pixels is not None:
            decoded.append(path)
        return pixels

    monkeypatch.setattr(engine, "upright_jpeg_pixels", counted)
    exact, failed = encode_images(tiny32, paths)
    assert not failed and sorted(decoded) == at_size  # the others went through the PIL steps
    with torch.inference_mode():
        naive = tiny32.model.encode_image(torch.stack([tiny32.preprocess(load_rgb(p)) for p in paths]))
    assert np.allclose(exact, torch.nn.functional.normalize(naive).numpy(), atol=1e-6)
    assert takes_pixels(inference_model(tiny_bf16))  # the bf16 copy takes the uint8 batch as it is
    fast, failed = encode_images(tiny_bf16, paths)
    assert not failed
    assert (exact * fast).sum(1).min() > 0.999


@pytest.mark.parametrize(("rates", "choice"), [((100.0, 120.0), "mkl"), ((100.0, 103.0), "onednn")])
def test_fp32_linear_kernel_is_measured_once_and_kept(
    artifacts: Path, monkeypatch: pytest.MonkeyPatch, rates: tuple[float, float], choice: str
) -> None:
    monkeypatch.setattr(tuning, "_kernels", {})
    monkeypatch.setattr(tuning, "_unread", set())
    assert tuning.fp32_linear_kernel(probe=False) == "onednn"  # nothing measured yet: the default
    calls = []

    def measured() -> dict[str, float]:
        calls.append(1)
        return {"onednn": rates[0], "mkl": rates[1]}

    monkeypatch.setattr(tuning, "linear_kernel_rates", measured)
    assert tuning.fp32_linear_kernel() == choice  # MKL must win by the margin
    stored = json.loads(tuning.probe_file().read_text())["kernels"]["fp32 linear"]
    assert stored["choice"] == choice
    monkeypatch.setattr(tuning, "_kernels", {})  # a new process reads the file
    assert tuning.fp32_linear_kernel() == choice and len(calls) == 1


@pytest.mark.parametrize(("rates", "parts"), [((100.0, 120.0), 2), ((100.0, 103.0), 1)])
def test_mlp_parts_are_measured_on_one_thread_once_per_format_and_kept(
    artifacts: Path, monkeypatch: pytest.MonkeyPatch, rates: tuple[float, float], parts: int
) -> None:
    monkeypatch.setattr(tuning, "_kernels", {})
    monkeypatch.setattr(tuning, "_unread", set())
    assert tuning.mlp_parts("bf16", onednn=True, probe=False) == 1  # nothing measured yet: whole
    calls: list[tuple[torch.dtype, bool, int]] = []

    def measured(dtype: torch.dtype, onednn: bool) -> dict[int, float]:
        calls.append((dtype, onednn, torch.get_num_threads()))
        return {1: rates[0], 2: rates[1]}

    monkeypatch.setattr(tuning, "mlp_parts_rates", measured)
    torch.set_num_threads(2)
    assert tuning.mlp_parts("bf16", onednn=True) == parts  # slices must win by the margin
    assert torch.get_num_threads() == 2  # measured as one stream runs, on one thread, then put back
    assert tuning.mlp_parts("fp32", onednn=False) == parts  # each format and kernel its own
    assert calls == [(torch.bfloat16, True, 1), (torch.float32, False, 1)]
    kernels = json.loads(tuning.probe_file().read_text())["kernels"]
    assert kernels["mlp parts bf16|onednn"] == {
        "choice": str(parts),
        "gflop_per_s": {"1": rates[0], "2": rates[1]},
    }
    monkeypatch.setattr(tuning, "_kernels", {})  # a new process reads the file
    assert tuning.mlp_parts("bf16", onednn=True) == parts and len(calls) == 2


def test_mlp_parts_rates_times_each_number_of_slices() -> None:
    from core.embed.packed import mlp_parts_rates

    rates = mlp_parts_rates(
        torch.float32, onednn=False, parts=(1, 2, 4), width=64, rows=32, blocks=2, rounds=1
    )
    assert sorted(rates) == [1, 2, 4] and all(rate > 0 for rate in rates.values())


@pytest.mark.skipif(not packing_available(torch.bfloat16), reason="this CPU cannot pack bf16 (no AVX-512)")
def test_a_bf16_copy_runs_its_mlps_in_the_measured_slices(
    artifacts: Path, tiny_bf16: LoadedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    import core.embed.packed as packed_module
    from core.embed.packed import PackedBlock

    images = torch.randn(4, *engine.input_shape(tiny_bf16), generator=torch.Generator().manual_seed(0))
    vectors, slices = [], []
    monkeypatch.setattr(tuning, "_kernels", {"mlp parts bf16|onednn": "2"})
    narrow = {len(m.fc) for m in inference_model(tiny_bf16).modules() if isinstance(m, PackedBlock)}
    assert narrow == {1}  # 256 hidden units: whole, however the probe chose
    assert engine.mlp_parts_of(tiny_bf16, "onednn", probe=False) == 1  # and the copy's key says so
    monkeypatch.setattr(packed_module, "MLP_SLICE_MIN_HIDDEN", 256)
    assert engine.mlp_parts_of(tiny_bf16, "onednn", probe=False) == 2
    for parts in ("1", "2"):
        monkeypatch.setattr(tuning, "_kernels", {"mlp parts bf16|onednn": parts})
        model = inference_model(tiny_bf16)  # made again for the other choice
        slices.append(
            [
                {len(m.fc) for m in tower.modules() if isinstance(m, PackedBlock)}
                for tower in (model.visual, model.transformer)
            ]
        )
        with torch.inference_mode():
            vectors.append(torch.nn.functional.normalize(model.encode_image(images.bfloat16()).float()))
    assert slices == [[{1}, {1}], [{2}, {1}]]  # the image tower's blocks; text blocks stay whole
    assert (vectors[0] * vectors[1]).sum(1).min() > 0.999
    engine_plan(tiny_bf16)  # probed, and cached under a key that names the slices and the attention kernel
    attention = f"attention={engine.attention_kernel_of(tiny_bf16)}"
    assert [key.split("|")[-2:] for key in json.loads(tuning.probe_file().read_text())["plans"]] == [
        ["mlp=2", attention]
    ]


def test_an_fp32fast_copy_runs_on_the_measured_kernel(
    artifacts: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from core.embed.engine import inference_model
    from core.embed.packed import PackedLinear, packing_available

    if not packing_available():
        pytest.skip("this torch build has no oneDNN packed linear")
    fast = load_model("capsearch-tiny", device="cpu", precision="fp32fast")
    monkeypatch.setattr(tuning, "_kernels", {"fp32 linear": "onednn"})
    onednn = {m.onednn for m in inference_model(fast).modules() if isinstance(m, PackedLinear)}
    monkeypatch.setattr(tuning, "_kernels", {"fp32 linear": "mkl"})
    mkl = {m.onednn for m in inference_model(fast).modules() if isinstance(m, PackedLinear)}
    assert (onednn, mkl) == ({True}, {False})  # the copy is made again for the other kernel


def test_the_probe_key_follows_the_cores_this_process_may_use(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tuning.os, "cpu_count", lambda: 16)  # the machine's, not this process's
    keys = []
    for cores in ({0}, {0, 1, 2, 3}):
        monkeypatch.setattr(tuning.os, "sched_getaffinity", lambda pid, cores=cores: cores, raising=False)
        assert tuning.cpu_cores() == len(cores)
        keys.append(tuning.machine_key())
    assert keys[0] != keys[1]
