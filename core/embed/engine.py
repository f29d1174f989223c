"""The embedding engine: batched image encoding fed by parallel decoding, and length-bucketed text encoding.

Images are decoded (``core.data.images.load_rgb``) and preprocessed in threads that never outnumber the
cores beside the model's: ahead in the background on cores the model leaves free (all of them beside a
GPU), else each batch between the model's calls, split across as many threads as it uses
(:func:`_decoded_batches`, :mod:`core.embed.split_decode`); or, when asked for, in ``workers`` spawned
processes. Threads are the default on a GPU too: beside an H200 with 16 cores, ViT-B-32 in bf16 embedded
7,000 Flickr8k files in 6.3-6.5 s so, against 118-122 s with 8 spawned workers. Where the probe finds
it faster, the CPU runs one model stream per core instead, each decoding its own batches
(:mod:`core.embed.streams`). An image that fails to decode gives a zero row and is listed, never an
exception. On the CPU the intra-op threads, the streams, the batch size (when the caller gives none) and
the input layout come from a short per-machine probe (:mod:`core.embed.tuning`). In the fast formats JPEGs
are decoded at a reduced scale when the model's input is at most half their short side (``draft``); fp32
decodes at full size, so it stays the exact mode. While
images or captions are encoded in bulk, large freed activations stay in the heap for the next batch
(:mod:`core.embed.heap`).

Texts: all captions are tokenized, sorted by token length and batched, most batches holding one length
(:func:`length_batches`); each batch runs the text transformer only up to its longest caption. For CLIP's
causal text tower this is exact (position i attends only to positions <= i, and the pooled EOT token lies
inside the kept prefix), and packed blocks also run the prefix a batch's captions share once and the last
block at the pooled token alone; for a Hugging Face text tower with mean or CLS pooling it is exact too
(padding is masked out of attention and pooling alike); other towers run at full context.

The towers run in ``lm.precision`` (see :mod:`core.models.device`): for every format but exact fp32 a
copy of the model is kept (refreshed when the fp32 weights change), so ``lm.model`` itself stays as it
is. A bf16 or fp32fast copy on the CPU also has its linear layers prepacked for oneDNN
(:mod:`core.embed.packed`): in fp32 on a 2-vCPU AMD EPYC without AVX-512, ViT-B-32's image tower ran up to
1.4x faster so (torch's own fp32 matmul goes through MKL, 74-106 GFLOP/s there from run to run against
oneDNN's steady 130; bench_throughput.json). Models with a
convolutional timm image trunk (EfficientNet-Lite LiT models) drifted in bf16: their fast copy stays fp32
with BatchNorm folded and channels-last (:mod:`core.embed.fp32_fast`).
"""

from __future__ import annotations

import copy
import queue
import threading
import weakref
from collections.abc import Callable, Generator, Iterable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from open_clip.hf_model import ClsPooler, MeanPooler
from open_clip.transform import MaybeConvertMode
from open_clip.transformer import TextTransformer, text_global_pool
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import CenterCrop, Normalize, Resize, ToTensor

from core.data.images import load_rgb, upright_jpeg_pixels
from core.embed import amx_attention
from core.embed.fp32_fast import fast_copy_is_fp32, fp32_fast_copy, image_input_dtype
from core.embed.heap import reuse_freed_memory
from core.embed.packed import (
    Normalization,
    PackedBlock,
    pack_for_cpu,
    packing_available,
    sliced_mlp_blocks,
    takes_pixels,
)
from core.embed.resnet_fast import pool_mean_token
from core.embed.split_decode import Batch, Item, batch_rows, collated, decoded, split_batches
from core.embed.streams import streamed
from core.embed.tuning import (
    DEFAULT_PLAN,
    PROBE_MIN_IMAGES,
    ImagePlan,
    cpu_cores,
    fp32_linear_kernel,
    image_plan,
    mlp_parts,
)
from core.errors import CapsearchError
from core.models.checkpoint import ClipModel
from core.models.loading import LoadedModel
from core.models.text_tower import hf_text_tower
from core.progress import Reporter, ensure

_PREFETCH_DEPTH = 2
# Tokens a caption batch holds before it stops at a longer caption (see length_batches): from about this
# size a pass costs its arithmetic, not its reading of the weights.
MIN_BATCH_TOKENS = 512
QUERY_THREADS = 1
# auto: decoding threads never outnumber the cores beside the model's (see _decoded_batches); background:
# one background decode thread whatever the cores, as before, for a benchmark to compare.
DECODE_MODE: Literal["auto", "background"] = "auto"
# Prepack the linear layers of a bf16 or fp32fast CPU copy (see core.embed.packed); a benchmark turns it off
# to compare.
PACK_CPU = True
# Run a plan's concurrent streams (core.embed.streams); off: one stream on all their threads, for a benchmark
# to compare.
STREAMS = True


# -- the model in its inference precision -------------------------------------------------------------------
@dataclass(frozen=True)
class _InferenceCopy:
    """A cast copy of a model and the model's parameters as they were when it was made."""

    params: list[nn.Parameter]
    key: tuple[Any, ...]
    model: ClipModel


_INFERENCE_COPIES: weakref.WeakKeyDictionary[ClipModel, _InferenceCopy] = weakref.WeakKeyDictionary()


def _weights_key(params: list[nn.Parameter], precision: str) -> tuple[Any, ...]:
    return (precision, *((p.data_ptr(), p._version) for p in params))


def inference_model(lm: LoadedModel) -> ClipModel:
    """``lm.model`` in ``lm.dtype``, in eval mode: the model itself for exact fp32, else a cached cast copy
    (on the CPU in bf16 or fp32fast, with prepacked linear layers; for the model kinds
    :mod:`core.embed.fp32_fast` names, such as a convolutional timm image tower, a faster fp32 copy), made
    again once the weights change in place (optimizer steps, ``load_state_dict``). The parameter list is
    kept with the copy: walking the module tree for it on every call cost a ViT-B-32 text query 0.5 ms."""
    if lm.precision == "fp32":
        return lm.model
    kernel = linear_kernel(lm, probe=False)
    parts = mlp_parts_of(lm, kernel, probe=False)
    settings = f"{lm.precision}|{kernel}|mlp={parts}"
    cached = _INFERENCE_COPIES.get(lm.model)
    if cached is not None and cached.key == _weights_key(cached.params, settings):
        return cached.model
    params = list(lm.model.parameters())
    cpu = lm.device.type == "cpu"
    cast = fp32_fast_copy(lm.model, channels_last=cpu)
    if cast is None:
        cast = copy.deepcopy(lm.model).to(lm.dtype).eval()
        if cpu:  # convolutions in oneDNN's preferred layout; changes no value of a linear
            cast = cast.to(memory_format=torch.channels_last)
    pack = _packed_dtype(lm) is not None
    if cpu:
        pool_mean_token(cast, pack, onednn=kernel == "onednn")
    if pack:
        cast = pack_for_cpu(
            cast, onednn=kernel == "onednn", pixels=pixel_normalization(lm.preprocess), mlp_parts=parts
        )
    key = _weights_key(params, settings)
    _INFERENCE_COPIES[lm.model] = _InferenceCopy(params, key, cast)
    return cast


def linear_kernel(lm: LoadedModel, probe: bool) -> str:
    """The linear kernel of ``lm``'s packed CPU copy: oneDNN in bf16, in fp32fast the one this machine
    measured faster (:func:`core.embed.tuning.fp32_linear_kernel`; ``probe``: measure it if not cached)."""
    if lm.precision != "fp32fast" or lm.device.type != "cpu" or not packing_available():
        return "onednn"
    return fp32_linear_kernel(probe)


def _packed_dtype(lm: LoadedModel) -> torch.dtype | None:
    """The dtype of ``lm``'s CPU inference copy when its linear layers get packed (bf16 and fp32fast on the
    CPU, where oneDNN can pack that dtype): fp32 where :func:`fp32_fast_copy` makes the copy, else
    ``lm.dtype``. None when they are not packed."""
    if not PACK_CPU or lm.device.type != "cpu" or lm.precision not in ("bf16", "fp32fast"):
        return None
    dtype = torch.float32 if fast_copy_is_fp32(lm.model) else lm.dtype
    return dtype if packing_available(dtype) else None


def mlp_parts_of(lm: LoadedModel, kernel: str, probe: bool) -> int:
    """How many slices of its hidden units the sliced blocks of ``lm``'s CPU copy
    (:func:`core.embed.packed.sliced_mlp_blocks`) run their MLP in (:func:`core.embed.tuning.mlp_parts`;
    ``probe``: measure it if not cached): 1 where the copy is not packed or has no such block."""
    dtype = _packed_dtype(lm)
    if dtype is None or next(sliced_mlp_blocks(lm.model), None) is None:
        return 1
    return mlp_parts("bf16" if dtype == torch.bfloat16 else "fp32", kernel == "onednn", probe)


def attention_kernel_of(lm: LoadedModel) -> str:
    """``amx`` where the packed blocks of ``lm``'s CPU copy run their unmasked one-thread attention on
    :mod:`core.embed.amx_attention` (bf16 copies, where it can run), else ``torch``."""
    bf16 = _packed_dtype(lm) == torch.bfloat16
    return "amx" if bf16 and amx_attention.kernel() is not None else "torch"


# -- text ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _CausalText:
    """The parts of a causal open_clip text tower (on CLIP itself or a CustomTextCLIP's TextTransformer)."""

    tower: open_clip.CLIP | TextTransformer
    pool_type: str
    eos_id: int | None
    prefixes: dict[tuple[int, ...], list[tuple[torch.Tensor, torch.Tensor] | None]] = field(
        default_factory=dict, compare=False
    )

    def pooled_rows(self, tokens: torch.Tensor) -> torch.Tensor:
        """The position each row is pooled at, as open_clip's ``text_global_pool`` picks it."""
        if self.pool_type == "first":
            return torch.zeros(len(tokens), dtype=torch.long, device=tokens.device)
        if self.pool_type == "argmax":
            return tokens.argmax(dim=-1)
        assert self.eos_id is not None  # causal_text_encoder keeps eos pooling only with an eos id
        return tokens.eq(self.eos_id).int().argmax(dim=-1)

    def _embedded(self, tokens: torch.Tensor, start: int) -> torch.Tensor:
        """Token plus positional embeddings of ``tokens`` placed from position ``start``."""
        t = self.tower
        cast = t.transformer.get_cast_dtype()
        positions = t.positional_embedding[start : start + tokens.shape[1]]
        return t.token_embedding(tokens).to(cast) + positions.to(cast)

    def _prefix_states(
        self, prefix: torch.Tensor, mask: torch.Tensor
    ) -> list[tuple[torch.Tensor, torch.Tensor] | None]:
        """Each block's keys and values of the token sequence ``prefix``, kept for the encoder's later
        batches."""
        key = tuple(prefix.tolist())
        if key not in self.prefixes:
            h = self._embedded(prefix[None], 0)
            states: list[tuple[torch.Tensor, torch.Tensor] | None] = []
            for block in self.tower.transformer.resblocks:
                h, kv = block.attend(h, mask)
                states.append(kv)
            self.prefixes[key] = states
        return self.prefixes[key]

    def _packed_pooled(self, tokens: torch.Tensor) -> torch.Tensor:
        """The pooled rows' final states through packed blocks (:meth:`PackedBlock.attend`): the prefix
        every row shares (CLIP's start token at least) runs once, its keys and values reused by all rows,
        and the last block computes the pooled positions alone. Exact under the causal mask."""
        blocks = self.tower.transformer.resblocks
        n = tokens.shape[1]
        mask = self.tower.attn_mask[:n, :n]
        rows = self.pooled_rows(tokens)
        shared = (tokens == tokens[:1]).all(dim=0).int().cumprod(dim=0).sum()
        p = min(int(shared), int(rows.min())) if len(tokens) > 1 else 0
        past = self._prefix_states(tokens[0, :p], mask[:p, :p]) if p else [None] * len(blocks)
        x = self._embedded(tokens[:, p:], p)
        for block, kv in zip(blocks[:-1], past[:-1], strict=True):
            x = block.attend(x, mask[p:], kv)[0]
        return blocks[-1].attend(x, mask[p:], past[-1], rows - p)[0]

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        """``encode_text`` on tokens cut to a prefix that holds every caption's EOT token (through
        :meth:`_packed_pooled` when every block is packed)."""
        t = self.tower
        blocks = t.transformer.resblocks
        if t.transformer.batch_first and all(isinstance(b, PackedBlock) for b in blocks):
            x = t.ln_final(self._packed_pooled(tokens))
        else:
            n = tokens.shape[1]
            x = t.transformer(self._embedded(tokens, 0), attn_mask=t.attn_mask[:n, :n])
            x = text_global_pool(t.ln_final(x), tokens, self.pool_type, eos_token_id=self.eos_id)
        proj = t.text_projection
        if proj is None:
            return x
        return proj(x) if isinstance(proj, nn.Linear) else x @ proj


def causal_text_encoder(model: ClipModel) -> _CausalText | None:
    """The truncatable text tower of ``model``, or None when cutting tokens would change the output."""
    if isinstance(model, open_clip.CLIP):
        tower, pool, eos = model, model.text_pool_type, model.text_eos_id
    elif (
        isinstance(model, open_clip.CustomTextCLIP)
        and isinstance(model.text, TextTransformer)
        and model.text.cls_emb is None
        and not model.text.use_pad_mask
    ):
        tower, pool, eos = model.text, model.text.pool_type, model.text.eos_id
    else:
        return None
    unpooled = pool not in ("argmax", "eos", "first") or (pool == "eos" and eos is None)
    if getattr(tower, "attn_mask", None) is None or unpooled:
        return None
    return _CausalText(tower, pool, eos)


def token_lengths(tokens: torch.Tensor, pad_id: int = 0) -> np.ndarray:
    """Per row, one past the last non-padding token: the prefix a causal or padding-masked tower needs."""
    positions = torch.arange(1, tokens.shape[1] + 1).expand_as(tokens)
    return (positions * (tokens != pad_id)).amax(dim=1).clamp(min=1).numpy()


def text_forward(lm: LoadedModel) -> tuple[Callable[[torch.Tensor], torch.Tensor], int | None]:
    """The text encoder to call and the padding id after which tokens may be cut (None: never cut)."""
    model = inference_model(lm)
    causal = causal_text_encoder(model)
    if causal is not None:
        return causal, 0
    hf = hf_text_tower(model)  # mean or CLS pooling ignores trailing padding; other poolers may not
    if hf is not None and isinstance(hf.pooler, (MeanPooler, ClsPooler)):
        return model.encode_text, hf.config.pad_token_id
    return model.encode_text, None


def _normalized(features: torch.Tensor) -> np.ndarray:
    return F.normalize(features.float(), dim=-1).cpu().numpy().astype(np.float32, copy=False)


def encode_texts(
    lm: LoadedModel, texts: list[str], batch_size: int = 256, reporter: Reporter | None = None
) -> np.ndarray:
    """L2-normalised float32 embeddings ``[len(texts), d]`` in the order given (length-bucketed batches)."""
    reporter = ensure(reporter)
    out = np.zeros((len(texts), lm.embed_dim), dtype=np.float32)
    if not texts:
        return out
    tokens = lm.tokenizer(list(texts))
    forward, pad_id = text_forward(lm)
    lengths = token_lengths(tokens, pad_id) if pad_id is not None else np.full(len(texts), tokens.shape[1])
    done = 0
    with torch.inference_mode(), reuse_freed_memory():
        for idx in length_batches(lengths, batch_size):
            reporter.check_cancelled()
            batch = tokens[torch.from_numpy(idx), : int(lengths[idx].max())].to(lm.device)
            out[idx] = _normalized(forward(batch))
            done += len(idx)
            reporter.update("embed captions", done, len(texts))
    return out


def length_batches(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Positions of ``lengths`` in batches of ascending length. A batch ends at ``batch_size`` rows, or where
    the length grows once it holds ``MIN_BATCH_TOKENS`` tokens: most batches then pad nothing, and rare
    lengths share a batch instead of each paying for a pass over the weights."""
    order = np.argsort(lengths, kind="stable")
    batches, start = [], 0
    for end in range(1, len(order) + 1):
        longest = int(lengths[order[end - 1]])
        grows = end == len(order) or int(lengths[order[end]]) > longest
        if end - start == batch_size or (grows and (end - start) * longest >= MIN_BATCH_TOKENS):
            batches.append(order[start:end])
            start = end
    if start < len(order):
        batches.append(order[start:])
    return batches


@contextmanager
def _intra_op_threads(n: int) -> Iterator[None]:
    """Run torch CPU ops with ``n`` intra-op threads inside the block."""
    previous = torch.get_num_threads()
    if previous == n:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def encode_text_query(lm: LoadedModel, text: str) -> np.ndarray:
    """One query's L2-normalised embedding ``[d]``: tokenize, cut to its length, encode.

    On the CPU a single query runs on ``QUERY_THREADS`` intra-op threads: its ops are tiny, and splitting
    them over threads that compete with other processes for the cores made ViT-B-32 queries several times
    slower on a shared 2-core machine.
    """
    if not text.strip():
        raise CapsearchError("the text query is empty", hint='type a description, e.g. "a dog in the snow"')
    tokens = lm.tokenizer([text])
    forward, pad_id = text_forward(lm)
    if pad_id is not None:
        tokens = tokens[:, : int(token_lengths(tokens, pad_id)[0])]
    threads = QUERY_THREADS if lm.device.type == "cpu" else torch.get_num_threads()
    with torch.inference_mode(), _intra_op_threads(threads):
        return _normalized(forward(tokens.to(lm.device)))[0]


def encode_text_queries(lm: LoadedModel, texts: list[str]) -> np.ndarray:
    """Several queries' embeddings ``[n, d]`` in one forward pass (a micro-batch of concurrent queries).

    One query goes through :func:`encode_text_query` (bit-identical to a single search); several are
    padded to the longest and encoded together on all intra-op threads, which agrees with encoding them
    one by one to float rounding (the towers cut by :func:`text_forward` ignore trailing padding).
    """
    for text in texts:
        if not text.strip():
            raise CapsearchError(
                "the text query is empty", hint='type a description, e.g. "a dog in the snow"'
            )
    if len(texts) == 1:
        return encode_text_query(lm, texts[0])[None, :]
    return encode_texts(lm, texts, batch_size=len(texts))


# -- images -------------------------------------------------------------------------------------------------
def pixel_normalization(preprocess: Callable[..., torch.Tensor]) -> Normalization | None:
    """The ``(mean, std)`` of an open_clip preprocessing that ends in ``ToTensor`` and ``Normalize`` (the
    split :class:`_SplitPreprocess` makes), else None."""
    steps = list(getattr(preprocess, "transforms", []))
    if len(steps) < 2 or not isinstance(steps[-2], ToTensor) or not isinstance(steps[-1], Normalize):
        return None
    return tuple(map(float, steps[-1].mean)), tuple(map(float, steps[-1].std))


class _SplitPreprocess:
    """An open_clip preprocessing split in two: the PIL steps (resize, crop) to uint8 pixels ``[h, w, 3]``
    in the decode thread or worker, and ``ToTensor``'s scaling plus ``Normalize`` on the whole batch in the
    model's thread (:meth:`finish`). Bit-identical to the one-image pipeline (the same float ops in the same
    order), and no torch op in the decode thread: run on all intra-op threads beside the model's, small
    per-image ops made decoding some 20x slower on a loaded 2-core machine (``bench_throughput.json``,
    decode alone), and a torch op in another thread starts that thread's own OpenMP team, whose threads
    spin beside the model's after each op (a helper thread's CHW copy slowed the compact model's later
    batches by 15%). The pixels stay in the decoder's layout: a batch of them is a channels-last NCHW view
    (:meth:`nchw`), what the fast copies take, with no copy to planar CHW and back."""

    def __init__(self, preprocess: Callable[..., torch.Tensor]) -> None:
        steps = list(getattr(preprocess, "transforms", []))
        normalization = pixel_normalization(preprocess)
        self.split = normalization is not None
        self.pil_steps = steps[:-2] if self.split else [preprocess]
        self.unchanged_size = _unchanged_size(self.pil_steps) if self.split else None
        if normalization is not None:
            mean, std = normalization
            self.mean = torch.as_tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
            self.std = torch.as_tensor(std, dtype=torch.float32).view(1, -1, 1, 1)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        """One image: uint8 ``[h, w, 3]`` (split) or the full preprocessing's float tensor."""
        out: Any = image
        for step in self.pil_steps:
            out = step(out)
        if not self.split:
            return out
        return torch.from_numpy(np.array(out.convert("RGB") if out.mode != "RGB" else out, dtype=np.uint8))

    def load(self, path: Path, min_side: int | None) -> torch.Tensor:
        """The file at ``path`` as :meth:`__call__` makes it. A JPEG stored upright at exactly the size the
        PIL steps leave unchanged skips them (they would only copy it four times) and Pillow's decoder."""
        if self.unchanged_size is not None:
            pixels = upright_jpeg_pixels(path, self.unchanged_size)
            if pixels is not None:
                return torch.from_numpy(pixels)
        return self(load_rgb(path, min_side=min_side))

    def item_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """The shape of one :meth:`__call__` output for a model input of ``shape`` (channels, height, width)."""
        return (*shape[1:], shape[0]) if self.split else shape

    def nchw(self, batch: torch.Tensor) -> torch.Tensor:
        """A batch of :meth:`__call__` outputs as ``[b, 3, h, w]`` (split: a view with channels-last strides)."""
        return batch.permute(0, 3, 1, 2) if self.split else batch

    def finish(self, batch: torch.Tensor) -> torch.Tensor:
        """A batch of :meth:`__call__` outputs as the model's float input ``[b, 3, h, w]``."""
        x = self.nchw(batch)
        if not self.split:
            return x
        return x.to(torch.float32).div(255).sub_(self.mean.to(x.device)).div_(self.std.to(x.device))


def _unchanged_size(steps: list[Any]) -> tuple[int, int] | None:
    """The (width, height) of an RGB image that open_clip's PIL steps (resize the short side to ``s``,
    crop the centre ``s`` x ``s``, convert to RGB) return unchanged: ``(s, s)``; None for other steps."""
    if [type(step) for step in steps] != [Resize, CenterCrop, MaybeConvertMode]:
        return None
    resize, crop, convert = steps
    side = resize.size if isinstance(resize.size, int) else tuple(resize.size)
    if isinstance(side, tuple) and len(side) == 1:
        side = side[0]
    if not isinstance(side, int) or resize.max_size is not None or tuple(crop.size) != (side, side):
        return None
    return (side, side) if convert.mode == "RGB" else None


class _ImageFiles(Dataset):
    """Decoded, preprocessed images; a failure yields a zero tensor and its reason (never raises).

    ``min_side``: decode JPEGs at a reduced scale that keeps at least this many pixels on the short side
    (see :func:`core.data.images.load_rgb`); None decodes at full size."""

    def __init__(
        self,
        paths: list[Path],
        transform: _SplitPreprocess,
        shape: tuple[int, ...],
        min_side: int | None = None,
    ):
        self.paths = paths
        self.transform = transform
        self.shape = shape
        self.min_side = min_side

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor, str]:
        try:
            return i, self.transform.load(self.paths[i], self.min_side), ""
        except CapsearchError as exc:
            reason = exc.message
        except Exception as exc:  # any decoder/transform failure of one file must not stop the run
            reason = f"{type(exc).__name__}: {exc}"
        return (
            i,
            torch.from_numpy(
                np.zeros(
                    self.transform.item_shape(self.shape), np.uint8 if self.transform.split else np.float32
                )
            ),
            reason,
        )


@dataclass
class ImageBatch:
    """Embeddings of ``indices`` (positions in the path list); failed images have zero rows."""

    indices: np.ndarray
    embeddings: np.ndarray
    failed: list[tuple[int, str]]


def model_threads(plan: ImagePlan) -> int:
    """The intra-op threads an image plan runs on (0 in the plan: torch's current setting)."""
    return plan.threads or torch.get_num_threads()


def _decoded_batches(files: _ImageFiles, batch_size: int, model_cpu_threads: int) -> Iterator[Batch]:
    """``files`` batch by batch, decoded in threads (:mod:`core.embed.split_decode`) that never outnumber
    the cores beside the model's ``model_cpu_threads``: where the model leaves cores free, a background
    thread decodes ahead while it runs, each batch split across as many threads as there are free cores;
    where it uses every core, each batch is decoded between its calls, split across as many threads as it
    uses. Collated in this thread."""
    free = cpu_cores() - model_cpu_threads
    decoded: Generator[list[Item], None, None]
    if DECODE_MODE == "auto" and free < 1:
        decoded = split_batches(files, batch_size, model_cpu_threads)
    else:
        decoded = _in_background(split_batches(files, batch_size, free if DECODE_MODE == "auto" else 1))
    with closing(decoded):
        for items in decoded:
            yield collated(items)


def _in_background(iterable: Iterable[Any], depth: int = _PREFETCH_DEPTH) -> Generator[Any, None, None]:
    """Iterate ``iterable`` in a daemon thread, ``depth`` items ahead of the consumer."""
    items: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: tuple[str, Any]) -> bool:
        while not stop.is_set():
            try:
                items.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for value in iterable:
                if not put(("item", value)):
                    return
            put(("end", None))
        except BaseException as exc:  # handed to the consumer thread, which re-raises it
            put(("error", exc))
        finally:
            close = getattr(iterable, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=produce, name="capsearch-decode", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = items.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()
        thread.join()


def input_shape(lm: LoadedModel) -> tuple[int, ...]:
    """One preprocessed image's shape (channels, height, width)."""
    return tuple(lm.preprocess(Image.new("RGB", (8, 8))).shape)


def decode_min_side(lm: LoadedModel, shape: tuple[int, ...]) -> int | None:
    """The short side JPEGs may be decoded down to: the input's larger side in the fast formats (the
    preprocessing resizes below it anyway), None (full decode, pixels as the naive loop's) in fp32."""
    return None if lm.precision == "fp32" or len(shape) != 3 else max(shape[1:])


def engine_plan(lm: LoadedModel, probe: bool = True) -> ImagePlan:
    """Threads, batch size and input layout of ``lm``'s image tower on this machine
    (:mod:`core.embed.tuning`: probed once per machine, model and format, then cached; ``probe`` False:
    the cached plan or the default, never a probe)."""
    if lm.device.type != "cpu":
        return DEFAULT_PLAN
    kernel = linear_kernel(lm, probe)
    parts = mlp_parts_of(lm, kernel, probe)
    model = inference_model(lm)
    shape = input_shape(lm)
    key = (
        f"{lm.model_id}|{lm.precision}|{'x'.join(map(str, shape))}|packed={PACK_CPU}|linear={kernel}"
        f"|mlp={parts}|attention={attention_kernel_of(lm)}"
    )
    dtype = image_input_dtype(model, lm.dtype)
    return image_plan(key, model.encode_image, shape, dtype, probe, layouts=lm.precision != "fp32")


def _image_tower(
    lm: LoadedModel, backend: str, probe: bool
) -> tuple[ImagePlan, Callable[[torch.Tensor], torch.Tensor], torch.dtype]:
    """The plan, the image encoder and its input dtype for ``backend``: torch (:func:`engine_plan`,
    :func:`inference_model`) or OpenVINO (:mod:`core.embed.openvino_backend`, which manages its own
    threads). uint8: the encoder takes the decoded pixels as they are (:func:`takes_pixels`)."""
    if backend == "openvino":
        from core.embed.openvino_backend import openvino_image_encoder

        return DEFAULT_PLAN, openvino_image_encoder(lm), lm.dtype
    model = inference_model(lm)
    dtype = torch.uint8 if takes_pixels(model) else image_input_dtype(model, lm.dtype)
    return engine_plan(lm, probe), model.encode_image, dtype


def iter_image_batches(
    lm: LoadedModel,
    paths: list[Path],
    batch_size: int | None = None,
    workers: int | None = None,
    reporter: Reporter | None = None,
    backend: str = "torch",
) -> Iterator[ImageBatch]:
    """Encode ``paths`` batch by batch, in order, decoding ahead of the model; see the module docstring.
    ``batch_size`` None: the machine's probed batch (:func:`engine_plan`). ``backend``: torch, or openvino
    (``--backend openvino``)."""
    reporter = ensure(reporter)
    if paths:
        with reuse_freed_memory():
            yield from _image_batches(lm, paths, batch_size, workers, reporter, backend)


def _image_batches(
    lm: LoadedModel,
    paths: list[Path],
    batch_size: int | None,
    workers: int | None,
    reporter: Reporter,
    backend: str,
) -> Iterator[ImageBatch]:
    plan, encode, dtype = _image_tower(lm, backend, probe=len(paths) >= PROBE_MIN_IMAGES)
    if workers or not STREAMS:
        plan = plan.one_stream()
    batch_size = batch_size or plan.batch_size
    workers = min(workers or 0, (len(paths) - 1) // batch_size)  # none for a single batch
    shape = input_shape(lm)
    preprocess = _SplitPreprocess(lm.preprocess)
    files = _ImageFiles(list(paths), preprocess, shape, decode_min_side(lm, shape))
    # A model taking pixels gathers them into patches: from channels-last, in runs of a patch row.
    layout = torch.channels_last if plan.channels_last or dtype == torch.uint8 else torch.contiguous_format

    def embedded(batch: Batch) -> ImageBatch:
        indices, images, reasons = batch
        ok = [j for j, reason in enumerate(reasons) if not reason]
        out = np.zeros((len(indices), lm.embed_dim), dtype=np.float32)
        if ok:
            x = images if len(ok) == len(reasons) else images[ok]
            x = x.to(lm.device, non_blocking=True)
            x = preprocess.nchw(x) if dtype == torch.uint8 else preprocess.finish(x).to(dtype)
            out[ok] = _normalized(encode(x.contiguous(memory_format=layout)))
        return ImageBatch(indices.numpy(), out, [(int(indices[j]), r) for j, r in enumerate(reasons) if r])

    embeddings: Iterator[ImageBatch]
    threads = model_threads(plan)  # this thread's, while it runs the model
    if plan.streams > 1:
        embeddings = streamed(
            batch_rows(len(files), batch_size, plan.streams),
            lambda rows: embedded(collated(decoded(files, rows, None, 1))),
            plan.streams,
            plan.threads,
        )
        # The streams set their own; leaving restores this thread's, which their threads changed for any
        # thread that starts torch later.
        threads = torch.get_num_threads()
    else:
        embeddings = (embedded(batch) for batch in _batches(files, batch_size, workers, lm, plan))
    done = 0
    with closing(embeddings), torch.inference_mode(), _intra_op_threads(threads):
        for batch in embeddings:
            reporter.check_cancelled()
            for index, reason in batch.failed:
                reporter.log(f"skipped image {paths[index]}: {reason}")
            done += len(batch.indices)
            reporter.update("embed images", done, len(paths))
            yield batch


def _batches(
    files: _ImageFiles, batch_size: int, workers: int, lm: LoadedModel, plan: ImagePlan
) -> Iterator[Batch]:
    """``files`` decoded batch by batch, in ``workers`` spawned processes or in threads
    (:func:`_decoded_batches`)."""
    if not workers:
        yield from _decoded_batches(files, batch_size, model_threads(plan) if lm.device.type == "cpu" else 0)
        return
    yield from DataLoader(
        files,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        multiprocessing_context="spawn",
        prefetch_factor=4,
        pin_memory=lm.device.type == "cuda",
    )


def encode_images(
    lm: LoadedModel,
    paths: list[Path],
    batch_size: int | None = None,
    workers: int | None = None,
    reporter: Reporter | None = None,
    backend: str = "torch",
) -> tuple[np.ndarray, list[tuple[int, str]]]:
    """L2-normalised float32 embeddings ``[len(paths), d]`` and the ``(index, reason)`` of failed images."""
    out = np.zeros((len(paths), lm.embed_dim), dtype=np.float32)
    failed: list[tuple[int, str]] = []
    for batch in iter_image_batches(lm, paths, batch_size, workers, reporter, backend):
        out[batch.indices] = batch.embeddings
        failed += batch.failed
    return out, failed


def encode_image_query(lm: LoadedModel, path: str | Path) -> np.ndarray:
    """One image's L2-normalised embedding ``[d]``; an unreadable file raises ``ImageLoadError``."""
    return encode_pil_query(lm, load_rgb(Path(path)))


def encode_pil_query(lm: LoadedModel, image: Image.Image) -> np.ndarray:
    """One decoded RGB image's L2-normalised embedding ``[d]``."""
    model = inference_model(lm)
    x = lm.preprocess(image).unsqueeze(0).to(lm.device, dtype=image_input_dtype(model, lm.dtype))
    with torch.inference_mode():
        return _normalized(model.encode_image(x))[0]
