"""Training data: image-caption pairs with images preloaded once as a uint8 tensor at the model's input size.

Each epoch pairs every image with one of its captions, drawn afresh (seeded by run seed and epoch, so a
resumed run sees the same batches); optionally with k of its captions at once, which costs little when the
caption features are precomputed. Augmentation (random resized crop, optional flip) runs batched on the
tensor. Preloaded images are cached under ``<artifacts>/cache/images/`` keyed by dataset, split and size.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from core.atomic import file_sha256, load_npy_checked, save_npy, write_text
from core.data.images import ImageLoadError, load_rgb
from core.data.records import PreparedDataset
from core.errors import DatasetError
from core.locks import exclusive
from core.models.checkpoint import ClipModel
from core.paths import artifacts_root, safe_name
from core.progress import Reporter, ensure

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def cache_dir() -> Path:
    return artifacts_root() / "cache"


def image_size_of(model: ClipModel) -> int:
    """The square input size of the model's image tower."""
    size = model.visual.image_size
    return int(size[0] if isinstance(size, tuple | list) else size)


def _load_square(path: Path, size: int) -> np.ndarray:
    """Resize the shorter side to ``size`` (bicubic) and centre-crop: open_clip's eval preprocessing."""
    img = load_rgb(path)
    scale = size / min(img.size)
    w, h = max(size, round(img.width * scale)), max(size, round(img.height * scale))
    img = img.resize((w, h), Image.Resampling.BICUBIC)
    left, top = (w - size) // 2, (h - size) // 2
    return np.asarray(img.crop((left, top, left + size, top + size)), dtype=np.uint8).transpose(2, 0, 1)


def preload_images(
    dataset: PreparedDataset, split: str, size: int, reporter: Reporter | None = None
) -> torch.Tensor:
    """All images of ``split`` as a uint8 tensor [n, 3, size, size] (unreadable images are black, logged)."""
    reporter = ensure(reporter)
    key = f"{safe_name(dataset.name)}-{dataset.fingerprint[:12] or 'nofp'}-{split}-{size}.npy"
    path = cache_dir() / "images" / key
    with exclusive(path.parent, reporter.log):
        return _cached_or_loaded(dataset, split, size, path, reporter)


def _cached_or_loaded(
    dataset: PreparedDataset, split: str, size: int, path: Path, reporter: Reporter
) -> torch.Tensor:
    """The preloaded images from ``path`` when valid, else loaded and saved there (lock held)."""
    records = dataset.split(split)
    digest = path.with_name(path.name + ".sha256")
    if path.is_file():
        sha256 = digest.read_text(encoding="utf-8").strip() if digest.is_file() else None
        cached = load_npy_checked(path, sha256)
        if cached is not None and cached.shape == (len(records), 3, size, size):
            return torch.from_numpy(cached)
        reporter.log(f"preloaded image cache {path} is damaged or from an older capsearch; rebuilding it")
    if not records:
        raise DatasetError(f"split {split!r} of dataset {dataset.name!r} is empty")
    arr = np.zeros((len(records), 3, size, size), dtype=np.uint8)
    for i, rec in enumerate(records):
        reporter.check_cancelled()
        try:
            arr[i] = _load_square(dataset.image_path(rec), size)
        except (
            ImageLoadError,
            OSError,
            ValueError,
        ) as exc:  # a bad image must not stop training; it is reported
            reporter.log(f"skipping unreadable image {rec.id}: {exc}")
        if i % 200 == 0 or i == len(records) - 1:
            reporter.update(f"load {split} images", i + 1, len(records))
    save_npy(path, arr)
    write_text(digest, file_sha256(path))
    return torch.from_numpy(arr)


@dataclass
class CaptionTable:
    """The captions of a split, flattened: ``caption_image[j]`` is the image index of caption ``j``."""

    captions: list[str]
    caption_image: np.ndarray
    offsets: np.ndarray  # image i owns captions offsets[i]:offsets[i + 1]

    @classmethod
    def of(cls, dataset: PreparedDataset, split: str) -> CaptionTable:
        records = dataset.split(split)
        captions: list[str] = []
        owner: list[int] = []
        offsets = [0]
        for i, rec in enumerate(records):
            captions.extend(rec.captions)
            owner.extend([i] * len(rec.captions))
            offsets.append(len(captions))
        if not captions:
            raise DatasetError(
                f"split {split!r} of dataset {dataset.name!r} has no captions",
                hint="training needs a captioned dataset (an uncaptioned folder is a search gallery only)",
            )
        return cls(captions, np.asarray(owner, dtype=np.int64), np.asarray(offsets, dtype=np.int64))


def epoch_batches(
    table: CaptionTable, batch_size: int, seed: int, epoch: int, per_image: int = 1
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """This epoch's batches of (image indices [b], caption indices [b] or, with ``per_image`` > 1, [b, k]:
    that many distinct captions of each image, repeating only when an image has fewer). Images without
    captions are left out, and a final partial batch is dropped unless it is the only one."""
    rng = np.random.default_rng([seed, epoch])
    counts = np.diff(table.offsets)
    images = np.flatnonzero(counts > 0)
    images = images[rng.permutation(len(images))]
    if per_image == 1:
        captions = table.offsets[images] + (rng.random(len(images)) * counts[images]).astype(np.int64)
    else:
        captions = np.stack(
            [table.offsets[i] + np.resize(rng.permutation(counts[i]), per_image) for i in images]
        )
    n_batches = max(1, len(images) // batch_size)
    return [
        (
            torch.from_numpy(images[b * batch_size : (b + 1) * batch_size]),
            torch.from_numpy(captions[b * batch_size : (b + 1) * batch_size]),
        )
        for b in range(n_batches)
    ]


def normalize(
    images: torch.Tensor, mean: tuple[float, ...] = OPENAI_MEAN, std: tuple[float, ...] = OPENAI_STD
) -> torch.Tensor:
    """uint8 [b, 3, h, w] -> normalised float32."""
    m = torch.tensor(mean, device=images.device).view(1, 3, 1, 1)
    s = torch.tensor(std, device=images.device).view(1, 3, 1, 1)
    return (images.float() / 255.0 - m) / s


def augment(images: torch.Tensor, crop_scale: float, flip: bool, generator: torch.Generator) -> torch.Tensor:
    """Batched random resized crop (area in [crop_scale, 1], aspect in [3/4, 4/3]) and optional horizontal
    flip on normalised float images, one ``grid_sample`` call for the whole batch."""
    if crop_scale >= 1.0 and not flip:
        return images
    b = images.shape[0]
    area = crop_scale + (1 - crop_scale) * torch.rand(b, generator=generator)
    log_ratio = (torch.rand(b, generator=generator) * 2 - 1) * math.log(4 / 3)
    ratio = torch.exp(log_ratio)
    sx = torch.sqrt(area * ratio).clamp(max=1.0)
    sy = torch.sqrt(area / ratio).clamp(max=1.0)
    tx = (torch.rand(b, generator=generator) * 2 - 1) * (1 - sx)
    ty = (torch.rand(b, generator=generator) * 2 - 1) * (1 - sy)
    if flip:
        sx = sx * torch.where(torch.rand(b, generator=generator) < 0.5, -1.0, 1.0)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = sx, tx, sy, ty
    grid = F.affine_grid(theta.to(images.device), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def tokenize_all(
    tokenizer: Callable[..., torch.Tensor], captions: list[str], chunk: int = 4096
) -> torch.Tensor:
    """Token ids of every caption [n, context_length]."""
    return torch.cat([tokenizer(captions[i : i + chunk]) for i in range(0, len(captions), chunk)])
