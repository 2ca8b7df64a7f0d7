"""Progressive-shrinking trainer: teacher -> elastic kernel -> elastic depth -> elastic expand.

One optimizer step = several sub-networks (gradients accumulated) on one batch, with knowledge
distillation from the frozen teacher (the full network after phase 1) or, with the sandwich sampler,
in-place distillation from the largest sub-network of the same step. Each phase has its own SGD
Nesterov optimizer and cosine schedule. Checkpoints are written atomically at each epoch end and every
`checkpoint_interval_s`; `train(..., resume=True)` continues from the exact step.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from exports.files import atomic_write_text
from exports.progress import progress_bar, quiet
from factory.data import Dataset, Split, load_dataset, to_model_input
from factory.errors import UserInputError
from factory.evaluate import evaluate_on
from factory.run import (
    CHECKPOINT_DIR,
    CONFIG_FILE,
    DATA_FILE,
    METRICS_FILE,
    SUMMARY_FILE,
    SUPERNET_FILE,
    save_supernet,
    write_data_json,
)
from factory.training.checkpoint import Position, load_checkpoint, save_checkpoint
from factory.training.config import TrainConfig, first_incompatible_key, load_config_file
from factory.training.distributed import DistContext
from factory.training.sampling import PHASE_ORDER, derive_seed, sample_step
from supernets import SearchSpace, Supernet, get_space

CHECKPOINT_NAME = "last.pt"


@dataclass(frozen=True)
class SessionClock:
    """Cumulative wall and CPU seconds of a run: this process's time plus what the checkpoint it resumed
    from had recorded (a fresh run starts from zero)."""

    wall_start: float
    cpu_start: float
    wall_base: float
    cpu_base: float

    @classmethod
    def start(cls, pos: Position) -> SessionClock:
        return cls(time.monotonic(), time.process_time(), pos.elapsed_seconds, pos.cpu_seconds)

    def elapsed_seconds(self) -> float:
        return self.wall_base + time.monotonic() - self.wall_start

    def cpu_seconds(self) -> float:
        return self.cpu_base + time.process_time() - self.cpu_start


@dataclass
class Trainer:
    """The state of one training process. Built by `train`; methods are the steps of the loop."""

    cfg: TrainConfig
    out: Path
    ctx: DistContext
    data: Dataset
    space: SearchSpace
    net: Supernet
    pos: Position
    teacher: Supernet | None = None
    optimizer: torch.optim.Optimizer | None = None
    scheduler: torch.optim.lr_scheduler.LambdaLR | None = None
    last_checkpoint: float = 0.0
    on_epoch: Callable[[dict[str, Any]], None] | None = None  # rank 0, after each epoch's metrics line

    # ----- helpers ------------------------------------------------------------------------------
    @property
    def phase_names(self) -> list[str]:
        return list(PHASE_ORDER)

    def steps_per_epoch(self) -> int:
        t = self.cfg.train
        return t.steps_per_epoch or max(1, len(self.data.train) // t.batch_size)

    def global_epoch(self, phase: int, epoch: int) -> int:
        return sum(self.cfg.phases[p].epochs for p in PHASE_ORDER[:phase]) + epoch

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.ctx.device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if self.ctx.device.type == "cpu" else x

    def params(self) -> list[nn.Parameter]:
        return list(self.net.parameters())

    # ----- phase setup --------------------------------------------------------------------------
    def restore(self, state: dict[str, Any]) -> None:
        """Weights, position and teacher of checkpoint `state` (its optimizer and schedule: `start_phase`)."""
        self.net.load_state_dict(state["model"])
        self.pos = state["position"]
        if state.get("teacher") is not None:
            teacher = Supernet(self.space, self.data.info.num_classes, dropout=self.cfg.model.dropout)
            teacher.load_state_dict(state["teacher"])
            self.teacher = _frozen_copy(teacher)

    def start_phase(self, phase: int, state: dict[str, Any] | None) -> None:
        """Teacher snapshot, channel re-organisation (before expand) and a fresh optimizer + schedule.
        With `state` (resume mid-phase) the optimizer/scheduler states are loaded instead."""
        name = PHASE_ORDER[phase]
        if phase >= 1 and self.teacher is None:
            self.teacher = _frozen_copy(self.net)
        if name == "expand" and state is None:
            self.net.reorganize_channels()
        decay, no_decay = [], []
        for pname, p in self.net.named_parameters():
            (decay if p.ndim > 1 and "transforms" not in pname else no_decay).append(p)
        t, lr = self.cfg.train, self.cfg.phases[name].lr
        self.optimizer = torch.optim.SGD(
            [{"params": decay, "weight_decay": t.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=lr, momentum=t.momentum, nesterov=t.momentum > 0,
            # one kernel over all parameters instead of ~8 small ops each: 9.8 -> 3.3 ms a step on 2 CPU cores
            fused=True,
        )
        total = max(1, self.cfg.phases[name].epochs * self.steps_per_epoch())
        warmup = min(t.warmup_steps, total - 1) if phase == 0 else 0
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, cosine_schedule(total, warmup))
        if state is not None:
            if state.get("optimizer") is not None:
                self.optimizer.load_state_dict(state["optimizer"])
            if state.get("scheduler") is not None:
                self.scheduler.load_state_dict(state["scheduler"])
            _to_device(self, self.net)  # optimizer state loaded on CPU

    # ----- one step -----------------------------------------------------------------------------
    def batch(self, global_epoch: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's shard of the global batch `step` of epoch `global_epoch` (all ranks agree on order)."""
        t, n = self.cfg.train, len(self.data.train)
        gen = torch.Generator().manual_seed(derive_seed(t.seed, "epoch", global_epoch))
        need = (step + 1) * t.batch_size
        perm = torch.cat([torch.randperm(n, generator=gen) for _ in range(math.ceil(need / n))])
        idx = perm[step * t.batch_size:need][self.ctx.rank::self.ctx.world_size]
        images = self.data.train.images[idx]
        if t.augment_shift:
            aug = torch.Generator().manual_seed(derive_seed(t.seed, "augment", self.pos.global_step, self.ctx.rank))
            images = random_shift(images, t.augment_shift, aug)
        return images, self.data.train.labels[idx]

    def train_step(self, phase: str) -> tuple[float, int]:
        t = self.cfg.train
        images, labels = self.batch(self.global_epoch(self.pos.phase, self.pos.epoch), self.pos.step)
        labels = labels.to(self.ctx.device)
        archs = sample_step(self.space, phase, t.sampler, t.subnets_per_step, t.seed, self.pos.global_step,
                            t.smallest_every)
        torch.manual_seed(derive_seed(t.seed, "dropout", self.pos.global_step, self.ctx.rank))
        if self.optimizer is None or self.scheduler is None:
            raise RuntimeError("train_step before start_phase")
        self.optimizer.zero_grad(set_to_none=True)
        inputs: dict[int, torch.Tensor] = {}
        teacher_logits: dict[int, torch.Tensor] = {}
        soft: torch.Tensor | None = None
        total = 0.0
        for k, arch in enumerate(archs):
            r = arch.resolution
            if r not in inputs:
                inputs[r] = self.prepare(to_model_input(images, r, self.data.info.mean, self.data.info.std))
            self.net.set_active(arch)
            logits = self.net(inputs[r])
            loss = F.cross_entropy(logits, labels, label_smoothing=t.label_smoothing)
            target = None
            if t.sampler == "sandwich" and phase != "teacher":
                target = soft if k > 0 else None
            elif self.teacher is not None and phase != "teacher" and t.kd_ratio > 0:
                if r not in teacher_logits:
                    with torch.no_grad():
                        teacher_logits[r] = self.teacher(inputs[r])
                target = teacher_logits[r]
            if target is not None and t.kd_ratio > 0:
                loss = loss + t.kd_ratio * _kd_loss(logits, target, t.kd_temperature)
            if k == 0 and t.sampler == "sandwich":
                soft = logits.detach()
            (loss / len(archs)).backward()
            total += float(loss.detach())
        self.ctx.average_gradients(self.params())
        self.optimizer.step()
        self.scheduler.step()
        return total / len(archs), len(labels)

    # ----- epoch end ----------------------------------------------------------------------------
    def evaluate(self, smallest: bool = True) -> dict[str, float]:
        """Validation accuracy and loss of the largest (and, with `smallest`, the smallest) sub-network."""
        res = {}
        val, calib, limit = self.data.val, self.data.calib, self.cfg.train.eval_images
        if limit:
            val = Split(val.images[:limit], val.labels[:limit])
            calib = Split(calib.images[:limit], calib.labels[:limit])
        nets = [("max", self.space.largest())] + ([("min", self.space.smallest())] if smallest else [])
        for which, arch in nets:
            r = evaluate_on(self.net, arch, calib, val, self.data.info.mean, self.data.info.std,
                            self.ctx.device, self.cfg.train.eval_batch_size)
            res[f"acc_{which}"] = round(r.accuracy, 5)
            res[f"loss_{which}"] = round(r.loss, 5)
        self.net.train()
        return res

    def checkpoint(self) -> None:
        if not self.ctx.is_main:
            return
        save_checkpoint(
            self.out / CHECKPOINT_DIR / CHECKPOINT_NAME, self.pos, self.cfg.to_toml(),
            _cpu_state(self.net), None if self.teacher is None else _cpu_state(self.teacher),
            None if self.optimizer is None else self.optimizer.state_dict(),
            None if self.scheduler is None else self.scheduler.state_dict(),
            torch.get_rng_state(),
        )
        self.last_checkpoint = time.monotonic()


def train(cfg: TrainConfig, out: str | Path, resume: bool = False,
          on_epoch: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Train a supernet into run folder `out` (or continue it with `resume`). Returns the summary.

    Works single-process and under torchrun (one process per rank; only rank 0 writes files and calls
    `on_epoch` with each epoch's metrics, e.g. experiment tracking)."""
    out = Path(out)
    ctx = DistContext.from_env(cfg.runtime.device)
    try:
        with torch.random.fork_rng(devices=[]):
            return _train(cfg, out, resume, ctx, on_epoch)
    finally:
        ctx.close()


def _train(cfg: TrainConfig, out: Path, resume: bool, ctx: DistContext,
           on_epoch: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    state = _check_out_dir(cfg, out, resume, out / CHECKPOINT_DIR / CHECKPOINT_NAME)
    trainer = _build_trainer(cfg, out, ctx, state)
    trainer.on_epoch = on_epoch
    if ctx.is_main:
        _write_run_files(trainer)
    trainer.last_checkpoint = time.monotonic()
    clock = SessionClock.start(trainer.pos)
    trainer.net.train()
    for phase in range(trainer.pos.phase, len(PHASE_ORDER)):
        name = PHASE_ORDER[phase]
        epochs = cfg.phases[name].epochs
        if epochs == 0:
            pos = trainer.pos
            trainer.pos = pos.moved_to(phase + 1, 0, pos.elapsed_seconds, pos.cpu_seconds)
            continue
        trainer.start_phase(phase, None if trainer.pos.at_phase_start else state)
        state = None  # only the phase the checkpoint was written in resumes mid-way
        for epoch in range(trainer.pos.epoch, epochs):
            _run_epoch(trainer, name, epoch, epochs, clock)
            _end_epoch(trainer, phase, epoch, clock)
    return _finish(trainer)


def _build_trainer(cfg: TrainConfig, out: Path, ctx: DistContext, state: dict[str, Any] | None) -> Trainer:
    """Space, data and supernet (initialised from the seed, then from checkpoint `state` if any), on the
    device, with the same weights on every rank."""
    if cfg.train.batch_size < ctx.world_size:
        raise UserInputError(f"train.batch_size = {cfg.train.batch_size} is smaller than the {ctx.world_size} "
                             f"processes; each needs at least one image per step")
    space = get_space(cfg.model.space, phi=cfg.model.phi, sampling=cfg.model.sampling)  # type: ignore[arg-type]
    data = load_dataset(cfg.data.source, image_size=max(space.resolutions), seed=cfg.data.split_seed,
                        on_bad_image=cfg.data.on_bad_image, val_fraction=cfg.data.val_fraction,  # type: ignore[arg-type]
                        test_fraction=cfg.data.test_fraction)
    if ctx.is_main and data.skipped_files:
        print(f"skipped {len(data.skipped_files)} unreadable image(s): {', '.join(data.skipped_files)}",
              file=sys.stderr)
    torch.manual_seed(derive_seed(cfg.train.seed, "init"))
    net = Supernet(space, data.info.num_classes, dropout=cfg.model.dropout)
    if cfg.train.zero_init_residual:
        _zero_init_residual(net)
    trainer = Trainer(cfg=cfg, out=out, ctx=ctx, data=data, space=space, net=net, pos=Position())
    if state is not None:
        trainer.restore(state)
    _to_device(trainer, net)
    ctx.broadcast_state(net)
    return trainer


def _write_run_files(trainer: Trainer) -> None:
    """config.toml and data.json of the run; metrics of epochs after the resume point are dropped."""
    out = trainer.out
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / CONFIG_FILE, trainer.cfg.to_toml())
    write_data_json(out / DATA_FILE, trainer.data)
    _trim_metrics(out / METRICS_FILE, trainer.global_epoch(trainer.pos.phase, trainer.pos.epoch))


def _run_epoch(trainer: Trainer, name: str, epoch: int, epochs: int, clock: SessionClock) -> None:
    """Steps of one epoch from the current position; mid-epoch checkpoints record `clock`'s cumulative times."""
    cfg, ctx = trainer.cfg, trainer.ctx
    steps = trainer.steps_per_epoch()
    bar = progress_bar(total=steps, initial=trainer.pos.step, desc=f"{name} {epoch + 1}/{epochs}", unit="step",
                       enabled=ctx.is_main and cfg.runtime.progress, leave=False, dynamic_ncols=True)
    try:
        while trainer.pos.step < steps:
            t0 = time.monotonic()
            loss, n = trainer.train_step(name)
            dt = time.monotonic() - t0
            p = trainer.pos
            p.step += 1
            p.global_step += 1
            p.loss_sum += loss
            p.loss_count += 1
            p.images += n
            p.epoch_seconds += dt
            p.train_seconds += dt
            bar.update(1)
            bar.set_postfix(loss=f"{p.loss_sum / p.loss_count:.3f}",
                            img_s=f"{p.images * ctx.world_size / max(p.epoch_seconds, 1e-9):.0f}")
            due = time.monotonic() - trainer.last_checkpoint >= cfg.runtime.checkpoint_interval_s
            if due and p.step < steps:
                p.elapsed_seconds = clock.elapsed_seconds()
                p.cpu_seconds = clock.cpu_seconds()
                trainer.checkpoint()
    finally:
        bar.close()


def _end_epoch(trainer: Trainer, phase: int, epoch: int, clock: SessionClock) -> None:
    """BN buffers agreed across ranks, the epoch's metrics, the position moved to the next epoch; rank 0
    appends the metrics line and checkpoints (and saves the supernet after a phase's last epoch)."""
    ctx = trainer.ctx
    ctx.broadcast_buffers(trainer.net)
    metrics = _epoch_metrics(trainer, phase, epoch)
    last = epoch + 1 == metrics["epochs"]
    trainer.pos = trainer.pos.moved_to(phase + 1 if last else phase, 0 if last else epoch + 1,
                                       clock.elapsed_seconds(), clock.cpu_seconds())
    if ctx.is_main:
        _record_epoch(trainer, metrics)
        if last:
            save_supernet(_cpu_module(trainer.net), trainer.space, trainer.out / SUPERNET_FILE)
    ctx.barrier()


def _epoch_metrics(trainer: Trainer, phase: int, epoch: int) -> dict[str, Any]:
    """Loss and throughput summed over ranks; rank 0 adds the lr and the evaluation of max/min nets (after
    every epoch, or with train.eval_every = "phase" after a phase's last one; the smallest sub-network is
    not evaluated in the teacher phase, which never trains it)."""
    pos, ctx, name = trainer.pos, trainer.ctx, PHASE_ORDER[phase]
    metrics = {"phase": name, "epoch": epoch + 1, "epochs": trainer.cfg.phases[name].epochs,
               "global_epoch": trainer.global_epoch(phase, epoch) + 1, "step": pos.global_step}
    loss_sum, count, images = ctx.all_sum([pos.loss_sum, float(pos.loss_count), float(pos.images)])
    if ctx.is_main:
        metrics.update({"loss": round(loss_sum / max(1.0, count), 5),
                        "lr": trainer.optimizer.param_groups[0]["lr"] if trainer.optimizer else 0.0,
                        "images_per_s": round(images / max(1e-9, pos.epoch_seconds), 1)})
        if trainer.cfg.train.eval_every == "epoch" or epoch + 1 == metrics["epochs"]:
            metrics.update(trainer.evaluate(smallest=name != "teacher"))
    return metrics


def _record_epoch(trainer: Trainer, metrics: dict[str, Any]) -> None:
    """Rank 0: append the epoch's metrics line (with the run's cumulative times), print it, checkpoint."""
    pos = trainer.pos
    metrics["train_seconds"] = round(pos.train_seconds, 2)
    metrics["elapsed_seconds"] = round(pos.elapsed_seconds, 2)
    metrics["cpu_seconds"] = round(pos.cpu_seconds, 2)
    with (trainer.out / METRICS_FILE).open("a") as f:
        f.write(json.dumps(metrics) + "\n")
    if trainer.cfg.runtime.progress and not quiet():
        print(_metrics_line(metrics), file=sys.stderr)
    if trainer.on_epoch is not None:
        trainer.on_epoch(metrics)
    trainer.checkpoint()


def _finish(trainer: Trainer) -> dict[str, Any]:
    """The summary; rank 0 saves the final supernet and summary.json."""
    summary = _summary(trainer, trainer.out)
    if trainer.ctx.is_main:
        save_supernet(_cpu_module(trainer.net), trainer.space, trainer.out / SUPERNET_FILE)
        atomic_write_text(trainer.out / SUMMARY_FILE, json.dumps(summary, indent=2) + "\n")
    trainer.ctx.barrier()
    return summary


def _check_out_dir(cfg: TrainConfig, out: Path, resume: bool, ckpt_path: Path) -> dict[str, Any] | None:
    """A new run needs an empty/absent folder; a resume needs a matching config. Returns the checkpoint."""
    if not resume:
        if (out / CONFIG_FILE).exists() or (out / SUPERNET_FILE).exists() or ckpt_path.exists():
            raise UserInputError(f"{out}: already holds a run; pass --resume to continue it or choose another --out")
        return None
    cfg_file = out / CONFIG_FILE
    if not cfg_file.is_file():
        raise UserInputError(f"{cfg_file}: missing; nothing to resume (start without --resume)")
    stored = load_config_file(cfg_file)
    diff = first_incompatible_key(stored, cfg)
    if diff is not None:
        key, was, now = diff
        raise UserInputError(f"{cfg_file}: cannot resume with a different config: {key} was {was!r}, "
                             f"now {now!r} (change it back or train into a new --out)")
    if not ckpt_path.exists():
        if (out / SUPERNET_FILE).exists():
            raise UserInputError(f"{ckpt_path}: missing, but the run has a supernet.pt; it already finished?")
        return None  # killed before the first checkpoint: start over in the same folder
    return load_checkpoint(ckpt_path)


def _trim_metrics(path: Path, keep_below: int) -> None:
    """Drop metrics lines of epochs at/after the resume point (written after the last checkpoint)."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line).get("global_epoch", 0) <= keep_below:
                kept.append(line)
        except json.JSONDecodeError:
            continue  # a line cut by the kill
    atomic_write_text(path, "".join(f"{line}\n" for line in kept))


def _summary(trainer: Trainer, out: Path) -> dict[str, Any]:
    metrics = []
    if (out / METRICS_FILE).exists():
        metrics = [json.loads(line) for line in (out / METRICS_FILE).read_text().splitlines() if line.strip()]
    final = metrics[-1] if metrics else {}
    return {
        "run": str(out),
        "phases": {p: trainer.cfg.phases[p].epochs for p in PHASE_ORDER},
        "epochs": len(metrics),
        "steps": trainer.pos.global_step,
        "train_seconds": round(trainer.pos.train_seconds, 2),
        "elapsed_seconds": round(trainer.pos.elapsed_seconds, 2),
        "cpu_seconds": round(trainer.pos.cpu_seconds, 2),
        "world_size": trainer.ctx.world_size,
        "device": str(trainer.ctx.device),
        "weights_sha256": weights_sha256(trainer.net),
        "acc_max": final.get("acc_max"),
        "acc_min": final.get("acc_min"),
        "largest": trainer.space.largest().to_dict(),
        "smallest": trainer.space.smallest().to_dict(),
    }


def weights_sha256(net: nn.Module) -> str:
    """Hash of every parameter and buffer (CPU, contiguous): equal across ranks iff the weights are equal."""
    h = hashlib.sha256()
    for key, value in sorted(net.state_dict().items()):
        h.update(key.encode())
        h.update(value.detach().to("cpu").contiguous().numpy().tobytes())
    return h.hexdigest()


def _metrics_line(m: dict[str, Any]) -> str:
    accuracy = "".join(f"  acc {which} {m[f'acc_{which}'] * 100:.2f}%" for which in ("max", "min")
                       if f"acc_{which}" in m)
    return (f"[{m['phase']} {m['epoch']}/{m['epochs']}] loss {m.get('loss', 0):.4f}{accuracy}  "
            f"{m.get('images_per_s', 0):.0f} img/s  {m.get('elapsed_seconds', 0):.0f}s")


# ----- small pure helpers -------------------------------------------------------------------------
def cosine_schedule(total: int, warmup: int):
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))

    return factor


def _kd_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Soft-target distillation: T^2 * KL(softmax(teacher/T) || softmax(student/T))."""
    t = temperature
    return F.kl_div(F.log_softmax(student / t, 1), F.log_softmax(teacher / t, 1), reduction="batchmean",
                    log_target=True) * (t * t)


def random_shift(images: torch.Tensor, shift: int, gen: torch.Generator) -> torch.Tensor:
    """Translate each image by up to `shift` pixels (zero fill): cheap augmentation for small inputs."""
    n, _, h, w = images.shape
    padded = F.pad(images, (shift, shift, shift, shift))
    offsets = torch.randint(0, 2 * shift + 1, (n, 2), generator=gen).tolist()
    return torch.stack([padded[i, :, dy:dy + h, dx:dx + w] for i, (dy, dx) in enumerate(offsets)])


@torch.no_grad()
def _zero_init_residual(net: Supernet) -> None:
    """Residual blocks start as identities: deep supernets then train from the first steps."""
    for blocks in net.stages:
        for block in blocks:
            if block.use_residual:
                block.project_bn.weight.zero_()


def _frozen_copy(net: Supernet) -> Supernet:
    teacher = copy.deepcopy(net)
    teacher.set_active(teacher.space.largest())
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def _cpu_state(net: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", memory_format=torch.contiguous_format).clone()
            if v.ndim == 4 else v.detach().cpu().clone() for k, v in net.state_dict().items()}


def _cpu_module(net: Supernet) -> Supernet:
    """A CPU, contiguous-format copy for saving (the live net may be channels_last or on CUDA)."""
    clone = copy.deepcopy(net).to("cpu", memory_format=torch.contiguous_format)
    clone.set_active(clone.space.largest())
    return clone


def _to_device(trainer: Trainer, net: Supernet) -> None:
    fmt = torch.channels_last if trainer.ctx.device.type == "cpu" else torch.preserve_format
    net.to(trainer.ctx.device, memory_format=fmt)
    if trainer.teacher is not None:
        trainer.teacher.to(trainer.ctx.device, memory_format=fmt)
    if trainer.optimizer is not None:
        for st in trainer.optimizer.state.values():
            for k, v in st.items():
                if isinstance(v, torch.Tensor) and v.device != trainer.ctx.device:
                    st[k] = v.to(trainer.ctx.device)


__all__ = ["Trainer", "train"]
