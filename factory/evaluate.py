"""BN recalibration and evaluation of one sub-network.

Batch-norm statistics collected while training a supernet mix every sampled sub-network, so they fit
none of them. Before a sub-network is evaluated (or extracted for export) its BN running statistics are
recomputed on the calibration split (OFA's recipe); the supernet's own buffers are restored afterwards,
so evaluating one sub-network never changes what another one sees.

Under torchrun (`evaluate_on(..., ctx=...)`) every rank recalibrates on the same calibration batches and
evaluates every world_size-th validation batch; the counts are summed across ranks, so each rank gets
the single-process figures (docs/decisions.md: predictor measurements under torchrun).
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from factory.data import Split, to_model_input
from factory.errors import UserInputError
from supernets import ArchConfig
from supernets.ops import DynamicBatchNorm2d

if TYPE_CHECKING:
    from factory.run import Run
    from factory.training.distributed import DistContext
    from supernets import Supernet
    from supernets.static import StaticNet

DEFAULT_BATCH = 250
INPUT_CACHE_BYTES = 256 * 2**20


class InputCache:
    """Model inputs of an image tensor at one resolution, in batches, kept between sub-networks: measuring
    hundreds of sub-networks on the same calibration and validation images resized and normalised them
    again for each. Bounded in bytes (least recently used first out; a 224-px split too big to keep is
    simply prepared each time). Holds a reference to each source tensor, so identity is a safe key."""

    def __init__(self, max_bytes: int = INPUT_CACHE_BYTES) -> None:
        self.max_bytes = max_bytes
        self._store: OrderedDict[tuple, tuple[torch.Tensor, list[torch.Tensor]]] = OrderedDict()

    def batches(self, images: torch.Tensor, chunks: Sequence[slice], resolution: int, mean: Sequence[float],
                std: Sequence[float]) -> Iterator[torch.Tensor]:
        key = (id(images), tuple((c.start, c.stop) for c in chunks), resolution, tuple(mean), tuple(std))
        hit = self._store.get(key)
        if hit is not None and hit[0] is images:
            self._store.move_to_end(key)
            yield from hit[1]
            return
        prepared = [to_model_input(images[c], resolution, mean, std) for c in chunks]
        size = sum(t.numel() * t.element_size() for t in prepared)
        if size <= self.max_bytes:
            self._store[key] = (images, prepared)
            while sum(sum(t.numel() * t.element_size() for t in v[1]) for v in self._store.values()) > self.max_bytes:
                self._store.popitem(last=False)
        yield from prepared


_INPUTS = InputCache()


@dataclass(frozen=True)
class EvalResult:
    accuracy: float  # 0..1 on the split evaluated (validation unless asked otherwise)
    loss: float  # mean cross-entropy (no label smoothing)
    arch: ArchConfig
    images: int = 0
    # whether each image was classified right, in split order (single process only; None under torchrun):
    # the predictor's screen finds the images sub-networks disagree on from it (factory.predictor.screen)
    correct: torch.Tensor | None = field(default=None, compare=False, repr=False)

    def to_dict(self) -> dict:
        return {"accuracy": self.accuracy, "loss": self.loss, "arch": self.arch.to_dict(), "images": self.images}


def bn_modules(net: nn.Module) -> list[nn.Module]:
    return [m for m in net.modules() if isinstance(m, nn.BatchNorm2d | DynamicBatchNorm2d)]


@contextmanager
def preserved_bn_stats(net: nn.Module) -> Iterator[None]:
    """Snapshot every BN running buffer and restore it on exit."""
    saved = [(m, {k: getattr(m, k).clone() for k in ("running_mean", "running_var", "num_batches_tracked")})
             for m in bn_modules(net)]
    try:
        yield
    finally:
        with torch.no_grad():
            for m, bufs in saved:
                for k, v in bufs.items():
                    getattr(m, k).copy_(v)


def eval_device(device: str | torch.device) -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@contextmanager
def on_device(net: nn.Module, device: torch.device) -> Iterator[None]:
    """`net` on `device` (channels_last on the CPU: see docs/decisions.md), back on the CPU on exit."""
    net.to(device, memory_format=torch.channels_last if device.type == "cpu" else torch.preserve_format)
    try:
        yield
    finally:
        net.to("cpu", memory_format=torch.contiguous_format)


@contextmanager
def accumulating_bn(bns: Sequence[nn.Module]) -> Iterator[None]:
    """`bns` reset and in train mode with a cumulative average (momentum None): the forward passes inside
    recompute their statistics. On exit their momenta are back and they are in eval mode."""
    momenta = [m.momentum for m in bns]
    try:
        for m in bns:
            m.reset_running_stats()
            m.momentum = None
            m.train()
        yield
    finally:
        for m, momentum in zip(bns, momenta, strict=True):
            m.momentum = momentum
            m.eval()


def equal_chunks(n: int, batch_size: int) -> list[slice]:
    """`n` items in equal-size chunks of at most `batch_size` (as torch.tensor_split): BN recalibration's
    cumulative average then weights every chunk alike."""
    parts = max(1, -(-n // batch_size))
    bounds = [i * (n // parts) + min(i, n % parts) for i in range(parts + 1)]
    return [slice(a, b) for a, b in itertools.pairwise(bounds)]


def model_inputs(images: torch.Tensor, chunks: Sequence[slice], resolution: int, mean: Sequence[float],
                 std: Sequence[float], device: torch.device) -> Iterator[torch.Tensor]:
    """Each chunk of uint8 `images` as model input on `device` (kept between sub-networks: InputCache)."""
    for x in _INPUTS.batches(images, chunks, resolution, mean, std):
        yield _prepare(x, device)


def _prepare(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    x = x.to(device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last) if device.type == "cpu" else x


@torch.no_grad()
def recalibrate_bn(
    net: Supernet,
    arch: ArchConfig,
    images_uint8: torch.Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    batch_size: int = DEFAULT_BATCH,
    device: str | torch.device = "cpu",
) -> None:
    """In place: reset BN statistics and recompute them (cumulative average) for `arch` on `images_uint8`.

    The net is left in eval mode with its previously active arch; only BN buffers change (and the mode)."""
    if len(images_uint8) == 0:
        raise ValueError("recalibrate_bn: no calibration images")
    dev = eval_device(device)
    with net.activated(arch):
        net.eval()
        with accumulating_bn(bn_modules(net)):
            for x in model_inputs(images_uint8, equal_chunks(len(images_uint8), batch_size), arch.resolution,
                                  mean, std, dev):
                net(x)


@torch.no_grad()
def evaluate_on(
    net: Supernet,
    arch: ArchConfig,
    calib: Split,
    val: Split,
    mean: Sequence[float],
    std: Sequence[float],
    device: str | torch.device = "cpu",
    batch_size: int = DEFAULT_BATCH,
    ctx: DistContext | None = None,
) -> EvalResult:
    """BN-recalibrated accuracy/loss of `arch` on `val`; the net's BN buffers are restored afterwards.

    With `ctx` this is collective: every rank recalibrates on all of `calib` (the same batches, so the
    same statistics as one process), evaluates its share of the single-process batches of `val`, and
    gets the summed correct count and loss."""
    dev = eval_device(device)
    was_training = net.training
    chunks = rank_chunks(len(val), batch_size, ctx)
    with preserved_bn_stats(net):
        recalibrate_bn(net, arch, calib.images, mean, std, batch_size, dev)
        with net.activated(arch):
            inputs = model_inputs(val.images, chunks, arch.resolution, mean, std, dev)
            result = scored(((net(x), val.labels[part]) for x, part in zip(inputs, chunks, strict=True)), arch,
                            len(val), ctx)
    net.train(was_training)
    return result


def rank_chunks(n: int, batch_size: int, ctx: DistContext | None = None) -> list[slice]:
    """This rank's share of the single-process batches of `n` images (all of them without torchrun)."""
    starts = range(0, n, batch_size)
    if ctx is not None:
        starts = starts[ctx.rank::ctx.world_size]
    return [slice(start, start + batch_size) for start in starts]


def scored(batches: Iterable[tuple[torch.Tensor, torch.Tensor]], arch: ArchConfig, images: int,
           ctx: DistContext | None = None) -> EvalResult:
    """Accuracy and mean cross-entropy over (logits, labels) batches, summed across ranks (collective with ctx)."""
    correct, loss_sum = 0.0, 0.0
    hits: list[torch.Tensor] = []
    for logits, labels in batches:
        logits, labels = logits.float(), labels.to(logits.device)
        loss_sum += float(F.cross_entropy(logits, labels, reduction="sum"))
        hits.append((logits.argmax(1) == labels).cpu())
        correct += int(hits[-1].sum())
    if ctx is not None:
        correct, loss_sum = ctx.all_sum([correct, loss_sum])
    n = max(1, images)
    per_image = torch.cat(hits) if (ctx is None or ctx.world_size == 1) and hits else None
    return EvalResult(accuracy=correct / n, loss=loss_sum / n, arch=arch, images=images, correct=per_image)


EVAL_SPLITS = ("val", "test")


def evaluate_arch(run: Run, arch: ArchConfig, device: str = "cpu", batch_size: int = DEFAULT_BATCH,
                  split: str = "val") -> EvalResult:
    """Accuracy and loss of one sub-network of a trained run on its validation split (or its test split,
    which nothing selects on), BN recalibrated on the calib split."""
    if split not in EVAL_SPLITS:
        raise UserInputError(f"split: got {split!r}; allowed: {', '.join(EVAL_SPLITS)}")
    run.space.validate(arch)
    ds = run.dataset()
    images = getattr(ds, split)
    if len(images) == 0:
        raise UserInputError(f"run {run.path}: no {split} split (the run was made before the factory held one "
                             "out); train it again, or evaluate on val")
    dev = eval_device(device)
    with on_device(run.supernet, dev):
        return evaluate_on(run.supernet, arch, ds.calib, images, run.mean, run.std, dev, batch_size)


@torch.no_grad()
def static_accuracy(model: nn.Module, val: Split, resolution: int, mean: Sequence[float], std: Sequence[float],
                    batch_size: int = DEFAULT_BATCH) -> float:
    """Top-1 accuracy of an extracted (already BN-recalibrated) network on `val`, on the CPU: the pick
    measures the very network it then converts, instead of recalibrating the supernet twice."""
    correct = 0
    model.to(memory_format=torch.channels_last)  # CPU depthwise kernels: see docs/decisions.md
    try:
        for start in range(0, len(val), batch_size):
            x = to_model_input(val.images[start:start + batch_size], resolution, mean, std)
            logits = model(x.contiguous(memory_format=torch.channels_last))
            correct += int((logits.argmax(1) == val.labels[start:start + batch_size]).sum())
    finally:
        model.to(memory_format=torch.contiguous_format)  # what the exporters take
    return correct / max(1, len(val))


def calibrated_subnet(run: Run, arch: ArchConfig) -> StaticNet:
    """The static sub-network for `arch` with BN recalibrated on the calib split, eval mode, on CPU."""
    run.space.validate(arch)
    ds = run.dataset()
    net = run.supernet
    with preserved_bn_stats(net):
        recalibrate_bn(net, arch, ds.calib.images, run.mean, run.std)
        static = net.extract(arch)
    static = static.to(memory_format=torch.contiguous_format)
    static.eval()
    return static  # type: ignore[return-value]
