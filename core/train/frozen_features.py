"""Frozen-tower features, computed once and cached in the embedding cache's layout.

For a model whose image trunk and text trunk are frozen (a ``capsearch_towers`` config, see
:mod:`core.models.towers`), training only needs each image's pooled trunk features (1280-d for
EfficientNet-Lite) and each caption's pooled MiniLM features (384-d). They are computed here through the
embedding engine and stored by :func:`core.embed.cache.split_embeddings` (manifest, chunks, resume,
staleness checks) under ``embeddings/<feature-model-id>/<dataset>/<split>/``, with a feature model id
that names the trunk, its package version, the image size and the view:

- images: ``<config>.image-trunk@<dist>-<version>/<view>`` where the view is ``clean`` (the eval transform)
  or ``aug<k>`` (a seeded random resized crop + flip); caption rows are empty (records are passed without
  captions);
- captions: ``minilm-pooled@<dist>-<version>-ctx<context>``; its image rows are zeros (nothing is run on them).

The engine L2-normalises every row; the towers' heads (:class:`core.models.towers.ResidualHead`) normalise
their input too, so training on these rows equals running the model on the images. The frozen forward pass
runs under ``torch.inference_mode`` with channels-last activations.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torchvision import transforms

from core.data.records import ImageRecord, PreparedDataset
from core.embed.cache import SplitEmbeddings, cache_dir, split_embeddings
from core.embed.chunks import CAPTION_FILE, IMAGE_FILE, MANIFEST
from core.models.checkpoint import make_tokenizer
from core.models.device import resolve_precision
from core.models.loading import LoadedModel
from core.models.towers import LITE_MEAN, LITE_STD, TowerSpec, package_version
from core.progress import Reporter, ensure

AUG_MIN_SCALE = 0.5


class ImageTrunkFeatures(nn.Module):
    """``encode_image``: the frozen trunk's pooled features (channels-last)."""

    def __init__(self, trunk: nn.Module) -> None:
        super().__init__()
        self.trunk = trunk.eval().to(memory_format=torch.channels_last)
        self.dim = int(getattr(trunk, "num_features", 1280))

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(x.contiguous(memory_format=torch.channels_last))

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return torch.zeros(len(tokens), self.dim)


class TextTrunkFeatures(nn.Module):
    """``encode_text``: the frozen Hugging Face trunk's pooled features; ``encode_image`` gives zeros."""

    def __init__(self, text: Any) -> None:
        super().__init__()
        self.text: Any = text.eval()
        self.dim = int(text.config.hidden_size)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        mask = (tokens != self.text.config.pad_token_id).long()
        out = self.text.transformer(input_ids=tokens, attention_mask=mask)
        return self.text.pooler(out, mask)

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(len(x), self.dim)


def view_transform(size: int, view: int, min_scale: float = AUG_MIN_SCALE) -> Callable[..., torch.Tensor]:
    """View 0: the eval transform (resize, centre crop); view k > 0: random resized crop + horizontal flip."""
    norm = [transforms.ToTensor(), transforms.Normalize(LITE_MEAN, LITE_STD)]
    bicubic = transforms.InterpolationMode.BICUBIC
    if view == 0:
        return transforms.Compose([transforms.Resize(size, bicubic), transforms.CenterCrop(size), *norm])
    return transforms.Compose(
        [
            transforms.RandomResizedCrop(size, scale=(min_scale, 1.0), interpolation=bicubic),
            transforms.RandomHorizontalFlip(),
            *norm,
        ]
    )


def _without_captions(dataset: PreparedDataset, split: str) -> PreparedDataset:
    records = [dataclasses.replace(r, captions=()) for r in dataset.split(split)]
    return PreparedDataset(dir=dataset.dir, meta=dataset.meta, _splits={split: records})


def image_feature_id(model_cfg: dict[str, Any]) -> str:
    """The feature model id of a config's frozen image trunk (name, image size, package and version)."""
    spec = TowerSpec.from_cfg(model_cfg)
    assert spec is not None and spec.image_package
    size = int(model_cfg["vision_cfg"].get("image_size", 224))
    name = model_cfg["vision_cfg"]["timm_model_name"]
    return f"{name}-{size}.trunk@{spec.image_package}-{package_version(spec.image_package)}"


def view_tag(view: int, min_scale: float = AUG_MIN_SCALE) -> str:
    return "clean" if view == 0 else f"aug{view}-s{min_scale:g}"


def text_feature_id(model_cfg: dict[str, Any], context: int) -> str:
    """The feature model id of a config's frozen text trunk (package, version, context length)."""
    spec = TowerSpec.from_cfg(model_cfg)
    assert spec is not None and spec.text_package
    return f"minilm-pooled@{spec.text_package}-{package_version(spec.text_package)}-ctx{context}"


def _completed_rows(folder: Path, which: str) -> np.ndarray | None:
    """The rows of a cache folder: the joined array when complete, else its leading completed chunks."""
    manifest = folder / MANIFEST
    if not manifest.is_file():
        return None
    meta = json.loads(manifest.read_text(encoding="utf-8"))
    if meta.get("complete"):
        return np.load(folder / (IMAGE_FILE if which == "images" else CAPTION_FILE), allow_pickle=False)
    parts = []
    k = 0
    while (folder / f"chunk-{k:05d}.npz").is_file():
        with np.load(folder / f"chunk-{k:05d}.npz", allow_pickle=False) as z:
            parts.append(z[which])
        k += 1
    return np.concatenate(parts) if parts else None


def cached_prefix_features(
    model_cfg: dict[str, Any],
    dataset: PreparedDataset,
    split: str,
    views: int,
    min_scale: float = AUG_MIN_SCALE,
) -> SplitFeatures:
    """Features of the leading records of ``split`` whose clean view and captions are already cached (a
    complete cache, or the completed chunks of one still being built), for training when the frozen forward
    pass could not finish in time; where an augmented view is not cached yet the clean view stands in
    (``view_coverage`` says how many images each view really covers). Nothing is computed."""
    records = dataset.split(split)
    context = int(model_cfg["text_cfg"].get("context_length", 77))
    image_rows: list[np.ndarray] = []
    for v in range(views):
        folder = cache_dir(f"{image_feature_id(model_cfg)}/{view_tag(v, min_scale)}", dataset.name, split)
        rows = _completed_rows(folder, "images")
        if rows is None and v == 0:
            raise ValueError(f"no cached clean features for {split}")
        image_rows.append(rows if rows is not None else image_rows[0][:0])
    caps = _completed_rows(cache_dir(text_feature_id(model_cfg, context), dataset.name, split), "captions")
    if caps is None:
        raise ValueError(f"no cached caption features for {split}")
    counts = np.cumsum([len(r.captions) for r in records])
    n = min(len(image_rows[0]), int(np.searchsorted(counts, len(caps), side="right")))
    n_caps = int(counts[n - 1]) if n else 0
    owner = np.repeat(np.arange(n, dtype=np.int64), [len(r.captions) for r in records[:n]])
    coverage = [min(n, len(r)) for r in image_rows]
    views_out = []
    for rows in image_rows:  # an augmented view not cached yet for an image: its clean view stands in
        full = image_rows[0][:n].copy()
        full[: min(n, len(rows))] = rows[:n]
        views_out.append(full)
    return SplitFeatures(
        images=np.stack(views_out),
        captions=caps[:n_caps],
        caption_image=owner,
        records=records[:n],
        seconds=0.0,
        view_coverage=coverage,
        reused=True,
    )


@dataclass
class SplitFeatures:
    """Frozen features of one split: ``images[v]`` is view v ([n, d_img]); captions [m, d_txt] with owners."""

    images: np.ndarray
    captions: np.ndarray
    caption_image: np.ndarray
    records: list[ImageRecord]
    seconds: float
    reused: bool
    view_coverage: list[int] = dataclasses.field(default_factory=list)  # images with each view cached


def _lm(
    name: str,
    model_id: str,
    model: nn.Module,
    preprocess: Callable[..., torch.Tensor],
    lm_like: dict[str, Any],
) -> LoadedModel:
    return LoadedModel(
        name=name, pretrained=None, model_id=model_id, model=model, preprocess=preprocess, **lm_like
    )


@dataclass
class _FeaturePass:
    """What every frozen forward pass of one split shares: the config, the dataset and the engine settings."""

    config_name: str
    model_cfg: dict[str, Any]
    dataset: PreparedDataset
    split: str
    common: dict[str, Any]  # LoadedModel fields: tokenizer, device, context length, precision
    reporter: Reporter

    def run(
        self,
        model_id: str,
        model: ImageTrunkFeatures | TextTrunkFeatures,
        preprocess: Callable[..., torch.Tensor],
        dataset: PreparedDataset,
        batch_size: int,
    ) -> SplitEmbeddings:
        """``dataset``'s split through ``model``, cached under the feature model id ``model_id``."""
        lm = _lm(self.config_name, model_id, model, preprocess, {**self.common, "embed_dim": model.dim})
        return split_embeddings(lm, dataset, self.split, self.reporter, batch_size=batch_size, workers=0)

    def image_views(
        self, trunk: nn.Module, views: int, batch_size: int, min_scale: float
    ) -> tuple[list[np.ndarray], bool]:
        """Rows of view 0 (clean) and ``views - 1`` augmented views, and whether all came from the cache."""
        image_model = ImageTrunkFeatures(trunk)
        image_id = image_feature_id(self.model_cfg)
        size = int(self.model_cfg["vision_cfg"].get("image_size", 224))
        no_captions = _without_captions(self.dataset, self.split)
        rows: list[np.ndarray] = []
        reused = True
        for v in range(views):
            tag = view_tag(v, min_scale)
            torch.manual_seed(1000 + v)
            self.reporter.log(f"frozen image features: {self.split} view {v} ({tag})")
            transform = view_transform(size, v, min_scale)
            emb = self.run(f"{image_id}/{tag}", image_model, transform, no_captions, batch_size)
            reused &= emb.reused
            rows.append(emb.image_emb)
        return rows, reused


def split_features(
    model: Any,
    model_cfg: dict[str, Any],
    config_name: str,
    dataset: PreparedDataset,
    split: str,
    views: int = 1,
    precision: str = "fp32",
    reporter: Reporter | None = None,
    batch_size: int = 64,
    min_scale: float = AUG_MIN_SCALE,
    parts: tuple[str, ...] = ("images", "captions"),
) -> SplitFeatures:
    """Frozen image features for view 0 (clean) and ``views - 1`` augmented views, and caption features."""
    spec = TowerSpec.from_cfg(model_cfg)
    if spec is None or not spec.image_package or not spec.text_package:
        raise ValueError(f"{config_name} has no package-supplied image and text trunks")
    device = torch.device("cpu")
    tokenizer = make_tokenizer(model_cfg)
    context = int(getattr(tokenizer, "context_length", 77))
    common = {
        "tokenizer": tokenizer,
        "device": device,
        "context_length": context,
        "precision": resolve_precision(device, precision),
    }
    features = _FeaturePass(config_name, model_cfg, dataset, split, common, ensure(reporter))
    t0 = time.perf_counter()
    n_views = views if "images" in parts else 0
    image_rows, reused = features.image_views(model.visual.trunk, n_views, batch_size, min_scale)
    if "captions" not in parts:
        empty = np.zeros((0, 384), np.float32)
        return SplitFeatures(
            np.stack(image_rows),
            empty,
            np.zeros(0, np.int64),
            dataset.split(split),
            time.perf_counter() - t0,
            reused,
        )
    text_model = TextTrunkFeatures(model.text)
    features.reporter.log(f"frozen caption features: {split}")
    emb = features.run(
        text_feature_id(model_cfg, context), text_model, lambda _img: torch.zeros(1), dataset, 256
    )
    image_dim = int(getattr(model.visual.trunk, "num_features", 1280))  # as ImageTrunkFeatures.dim
    return SplitFeatures(
        images=np.stack(image_rows) if image_rows else np.zeros((0, len(emb.records), image_dim), np.float32),
        captions=emb.caption_emb,
        caption_image=emb.caption_image,
        records=emb.records,
        seconds=time.perf_counter() - t0,
        reused=reused and emb.reused,
    )
