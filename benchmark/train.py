"""The one training loop. Losses are pluggable :class:`~benchmark.losses.Objective` s.

AdamW (decoupled weight decay, none on norm/bias/logit_scale parameters, as open_clip
does), linear warm-up then cosine decay, a learned logit scale clamped to ``ln(100)``
after every step, seeded batch order, bf16 autocast on CUDA and fp32 on CPU, and a rich
progress bar. A non-finite loss stops the run with the stage and step named.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
from torch.utils.data import DataLoader, Dataset

from .config import check
from .data.dataset import batch_collate
from .losses import Objective, StepContext
from .models import ClipModel
from .progress import Reporter


@dataclass
class TrainConfig:
    """Optimisation schedule of one training stage."""

    epochs: int = 10
    batch_size: int = 256
    lr: float = 5e-4
    weight_decay: float = 0.1
    warmup_steps: int = 50
    beta1: float = 0.9
    beta2: float = 0.98
    eps: float = 1e-6
    max_logit_scale: float = 100.0
    grad_clip_norm: float | None = None
    precision: str = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU
    num_workers: int = 0

    def __post_init__(self) -> None:
        check(self.epochs >= 1, "epochs", self.epochs, "train for at least one epoch")
        check(self.batch_size >= 2, "batch_size", self.batch_size, "contrastive losses need a batch of at least 2")
        check(self.lr > 0 and math.isfinite(self.lr), "lr", self.lr, "use a positive learning rate")
        check(self.weight_decay >= 0, "weight_decay", self.weight_decay, "use a non-negative weight decay")
        check(self.warmup_steps >= 0, "warmup_steps", self.warmup_steps, "use 0 or more warm-up steps")
        check(self.precision in ("auto", "fp32", "bf16"), "precision", self.precision, "choose auto, fp32 or bf16")


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite."""


@dataclass
class TrainStats:
    steps: int = 0
    seconds: float = 0.0
    samples_per_s: float = 0.0
    loss_history: list[float] = field(default_factory=list)  # mean loss per epoch


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """open_clip's split: no weight decay on gains, biases, norms and the logit scale."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        exclude = p.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "logit_scale" in name
        (no_decay if exclude else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    kwargs = dict(lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps)
    try:  # fused AdamW is several times faster, on CPU too
        return torch.optim.AdamW(param_groups(model, cfg.weight_decay), fused=True, **kwargs)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(param_groups(model, cfg.weight_decay), **kwargs)


def warmup_cosine(warmup: int, total: int):
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


def autocast_for(device: torch.device, precision: str):
    use_bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16)


def make_loader(dataset: Dataset, cfg: TrainConfig, seed: int, device: torch.device, shuffle: bool = True, drop_last: bool = True) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=cfg.batch_size, shuffle=shuffle, drop_last=drop_last and len(dataset) > cfg.batch_size,
                      generator=generator, collate_fn=batch_collate, num_workers=cfg.num_workers,
                      pin_memory=device.type == "cuda", persistent_workers=cfg.num_workers > 0)


def train(model: ClipModel, dataset: Dataset, objective: Objective, cfg: TrainConfig, *, seed: int,
          device: torch.device | str = "cpu", stage: str = "train", reporter: Reporter | None = None) -> TrainStats:
    """Train ``model`` in place on ``dataset`` with ``objective``; return statistics."""
    device = torch.device(device)
    torch.manual_seed(seed)
    model.to(device).train()
    loader = make_loader(dataset, cfg, seed, device)
    steps_per_epoch = len(loader)
    total = steps_per_epoch * cfg.epochs
    optimizer = make_optimizer(model, cfg, device)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(cfg.warmup_steps, total))
    max_log_scale = math.log(cfg.max_logit_scale)
    ctx = StepContext(epoch=1, step=0, total_steps=total, generator=torch.Generator().manual_seed(seed + 1), device=device)
    stats = TrainStats()
    reporter = reporter or Reporter(enabled=False)
    start = time.perf_counter()
    samples = 0
    with reporter.task(stage, total=total) as advance:
        for epoch in range(1, cfg.epochs + 1):
            ctx.epoch = epoch
            objective.on_epoch_start(model, epoch, ctx)
            running, count = 0.0, 0
            for batch in loader:
                batch = batch.to(device, non_blocking=True)
                with autocast_for(device, cfg.precision):
                    out = objective(model, batch, ctx)
                loss = out.loss
                if not torch.isfinite(loss):
                    raise NonFiniteLossError(f"non-finite loss ({float(loss)}) in stage {stage!r} at epoch {epoch}, step {ctx.step}; "
                                             "lower the learning rate or check the data")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip_norm:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip_norm)
                optimizer.step()
                scheduler.step()
                with torch.no_grad():
                    model.logit_scale.clamp_(0, max_log_scale)
                running += float(loss.detach())
                count += 1
                samples += len(batch)
                ctx.step += 1
                advance(1, loss=running / count)
            stats.loss_history.append(running / max(1, count))
    stats.steps = ctx.step
    stats.seconds = time.perf_counter() - start
    stats.samples_per_s = samples / max(stats.seconds, 1e-9)
    model.eval()
    return stats
