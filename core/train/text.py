"""Caption features during training: token ids through the text tower, or, when a Hugging Face text trunk
is frozen, its pooled features computed once (and cached on disk per trunk and caption) then passed through
the trainable projection only, which makes a training step cost little more than the image tower."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from core.atomic import file_sha256, load_npy_checked, save_npy, write_text
from core.locks import exclusive
from core.models.checkpoint import ClipModel
from core.models.text_tower import hf_text_tower
from core.progress import Reporter, ensure
from core.train.data import cache_dir, tokenize_all


def has_frozen_hf_trunk(model: ClipModel) -> bool:
    """True when the model has a Hugging Face text tower whose trunk has no trainable parameter."""
    text = hf_text_tower(model)
    return text is not None and not any(p.requires_grad for p in text.transformer.parameters())


def _trunk_digest(model: ClipModel) -> str:
    h = hashlib.sha256()
    for name, tensor in sorted(model.text.transformer.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:12]


@torch.no_grad()
def _pooled(
    model: ClipModel, tokens: torch.Tensor, device: torch.device, batch: int, reporter: Reporter
) -> np.ndarray:
    text = model.text
    pad = text.config.pad_token_id
    lengths = (tokens != pad).sum(1)
    order = torch.argsort(lengths, descending=True)
    out = torch.zeros(len(tokens), text.config.hidden_size)
    was_training = text.training
    text.eval()
    for start in range(0, len(tokens), batch):
        reporter.check_cancelled()
        idx = order[start : start + batch]
        longest = max(1, int(lengths[idx].max()))
        ids = tokens[idx, :longest].to(device)
        mask = (ids != pad).long()
        out[idx] = text.pooler(text.transformer(input_ids=ids, attention_mask=mask), mask).float().cpu()
        reporter.update("encode captions (frozen text tower)", min(start + batch, len(tokens)), len(tokens))
    text.train(was_training)
    return out.numpy()


def _store_paths(model: ClipModel, context: int) -> tuple[Path, Path]:
    folder = cache_dir() / "text" / f"{_trunk_digest(model)}-{context}"
    return folder / "captions.json", folder / "features.npy"


def _read_store(names: Path, feats: Path) -> tuple[list[str], np.ndarray | None]:
    """The stored captions and their features (None when the array is missing, damaged or changed)."""
    try:
        index = json.loads(names.read_text(encoding="utf-8"))
        listed, sha256 = list(index["captions"]), str(index["sha256"])
    except (OSError, ValueError, KeyError, TypeError):
        return [], None
    return listed, load_npy_checked(feats, sha256)


def cached_pooled(
    model: ClipModel,
    tokenizer: Callable[..., torch.Tensor],
    captions: list[str],
    device: torch.device,
    reporter: Reporter,
) -> np.ndarray:
    """Pooled trunk features of ``captions``, from a per-trunk store of every caption seen so far (captions
    shared by several datasets or splits are encoded once); missing ones are computed and added."""
    tokens = tokenize_all(tokenizer, captions)
    names, feats = _store_paths(model, tokens.shape[1])
    with exclusive(names.parent, reporter.log):
        return _stored_or_encoded(model, tokens, captions, names, feats, device, reporter)


def _stored_or_encoded(
    model: ClipModel,
    tokens: torch.Tensor,
    captions: list[str],
    names: Path,
    feats: Path,
    device: torch.device,
    reporter: Reporter,
) -> np.ndarray:
    """The store's features of ``captions``, encoding and adding the missing ones (lock held)."""
    known: dict[str, int] = {}
    stored = np.zeros((0, model.text.config.hidden_size), dtype=np.float32)
    if names.is_file():
        listed, loaded = _read_store(names, feats)
        if loaded is not None and len(listed) == len(loaded):
            known, stored = {c: i for i, c in enumerate(listed)}, loaded
        else:
            reporter.log(
                f"caption feature cache {feats} is damaged or from an older capsearch; rebuilding it"
            )
    missing = sorted({c for c in captions if c not in known})
    if missing:
        index = {c: i for i, c in enumerate(captions)}
        rows = torch.tensor([index[c] for c in missing])
        stored = np.concatenate([stored, _pooled(model, tokens[rows], device, 256, reporter)])
        listed = [c for c, _ in sorted(known.items(), key=lambda kv: kv[1])] + missing
        known = {c: i for i, c in enumerate(listed)}
        save_npy(feats, stored)  # then the list with the array's hash: a kill in between is caught on load
        write_text(names, json.dumps({"captions": listed, "sha256": file_sha256(feats)}, ensure_ascii=False))
    return stored[[known[c] for c in captions]]


class TextFeatures:
    """Unnormalised caption features for caption indices of one caption list."""

    def __init__(
        self,
        model: ClipModel,
        tokenizer: Callable[..., torch.Tensor],
        captions: list[str],
        device: torch.device,
        reporter: Reporter | None = None,
    ) -> None:
        reporter = ensure(reporter)
        self.device = device
        # Rows indexed per caption, and what turns a batch of rows into features.
        self._rows: torch.Tensor
        self._encode: Callable[[torch.Tensor], torch.Tensor]
        if has_frozen_hf_trunk(model):
            pooled = cached_pooled(model, tokenizer, captions, device, reporter)
            self._rows, self._encode = torch.from_numpy(pooled).to(device), model.text.proj
        else:
            self._rows, self._encode = tokenize_all(tokenizer, captions).to(device), model.encode_text

    def __len__(self) -> int:
        return len(self._rows)

    def __call__(self, idx: torch.Tensor) -> torch.Tensor:
        return self._encode(self._rows[idx.to(self.device)])
