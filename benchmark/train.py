"""The one training loop. Losses are pluggable :class:`~benchmark.losses.Objective` s.

AdamW (decoupled weight decay, none on norm/bias/logit_scale parameters, as open_clip
does), linear warm-up then cosine decay, a learned logit scale clamped to ``ln(100)``
after every step, seeded batch order, bf16 autocast on CUDA and fp32 on CPU, and a rich
progress bar. A non-finite loss stops the run with the stage and step named.

Devices. On CUDA, an in-memory dataset (:class:`~benchmark.data.dataset.TensorPairs`)
whose images fit in a quarter of the free GPU memory is copied to the GPU once and
batches are cut there; other datasets go through pinned memory with non-blocking
copies. Inside a torchrun job (:mod:`benchmark.distributed`) every rank trains on its
shard of each global batch, with the global-batch loss, global batch-norm statistics and
averaged gradients: the loss trajectory is the single-process one up to float rounding.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
from torch.utils.data import DataLoader, Dataset

from . import distributed as ddp
from .config import check
from .data.dataset import TensorPairs, batch_collate
from .losses import Objective, StepContext
from .clip_model import ClipModel
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
    #: per-epoch mean of every LossOutput.parts entry (None for an epoch where a part was absent or non-finite)
    parts: dict[str, list[float | None]] = field(default_factory=dict)
    step_losses: list[float] = field(default_factory=list)  # loss of every step (not stored in the cache)
    diagnostics: dict = field(default_factory=dict)  # the objective's mechanism measurements (Objective.diagnostics)


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


def on_device(dataset: Dataset, device: torch.device, budget: float = 0.25) -> Dataset:
    """``dataset`` with its images moved to ``device`` when it is in memory and fits.

    Only for CUDA: the images (uint8) may take ``budget`` of the free GPU memory.
    """
    if device.type != "cuda" or not isinstance(dataset, TensorPairs) or dataset.images.device == device:
        return dataset
    try:
        free, _ = torch.cuda.mem_get_info(device)
    except RuntimeError:
        return dataset
    nbytes = dataset.images.numel() * dataset.images.element_size()
    if nbytes > budget * free:
        return dataset
    import dataclasses

    return dataclasses.replace(dataset, images=dataset.images.to(device, non_blocking=True))


def make_loader(dataset: Dataset, cfg: TrainConfig, seed: int, device: torch.device, shuffle: bool = True, drop_last: bool = True) -> DataLoader:
    """The seeded loader; inside a torchrun job, this rank's shard of the same global batches."""
    generator = torch.Generator().manual_seed(seed)
    drop = drop_last and len(dataset) > cfg.batch_size
    resident = isinstance(dataset, TensorPairs) and dataset.images.device.type != "cpu"
    common = dict(generator=generator, collate_fn=batch_collate, num_workers=0 if resident else cfg.num_workers,
                  pin_memory=device.type == "cuda" and not resident,
                  persistent_workers=cfg.num_workers > 0 and not resident)
    if ddp.is_distributed():
        from torch.utils.data import BatchSampler, RandomSampler, SequentialSampler

        world = ddp.world_size()
        if cfg.batch_size % world:
            from .config import ConfigError

            raise ConfigError(f"batch_size={cfg.batch_size} is not divisible by the {world} torchrun processes; "
                              "choose a batch size that is a multiple of --nproc_per_node")
        base = RandomSampler(dataset, generator=generator) if shuffle else SequentialSampler(dataset)
        batches = ddp.ShardedBatchSampler(BatchSampler(base, cfg.batch_size, drop), ddp.rank(), world)
        return DataLoader(dataset, batch_sampler=batches, **common)
    if isinstance(dataset, torch.utils.data.IterableDataset):  # streamed sources shuffle in their own seeded buffer
        common.pop("generator")
        return DataLoader(dataset, batch_size=cfg.batch_size, drop_last=drop, **common)
    return DataLoader(dataset, batch_size=cfg.batch_size, shuffle=shuffle, drop_last=drop, **common)


def train(model: ClipModel, dataset: Dataset, objective: Objective, cfg: TrainConfig, *, seed: int,
          device: torch.device | str = "cpu", stage: str = "train", reporter: Reporter | None = None) -> TrainStats:
    """Train ``model`` in place on ``dataset`` with ``objective``; return statistics."""
    device = torch.device(device)
    torch.manual_seed(seed)
    model.to(device).train()
    distributed = ddp.is_distributed()
    switched = []
    if distributed:
        ddp.broadcast_parameters(model)
        switched = ddp.use_global_batchnorm(model)
    store = getattr(model, "text_features", None)
    if store is not None and isinstance(getattr(dataset, "captions", None), list):
        store(dataset.captions)  # a frozen text body: every caption's features once, up front, in one shard
    loader = make_loader(on_device(dataset, device), cfg, seed, device)
    steps_per_epoch = len(loader)
    total = steps_per_epoch * cfg.epochs
    ctx = StepContext(epoch=1, step=0, total_steps=total, generator=torch.Generator().manual_seed(seed + 1), device=device)
    objective.on_train_start(model, ctx)  # before the optimiser: it may freeze parameters
    optimizer = make_optimizer(model, cfg, device)
    params = [p for p in model.parameters() if p.requires_grad]
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(cfg.warmup_steps, total))
    max_log_scale = math.log(cfg.max_logit_scale)
    stats = TrainStats()
    reporter = reporter or Reporter(enabled=False)
    start = time.perf_counter()
    samples = 0
    with reporter.task(stage, total=total) as advance:
        for epoch in range(1, cfg.epochs + 1):
            ctx.epoch = epoch
            objective.on_epoch_start(model, epoch, ctx)
            if store is not None:
                ahead = list(objective.texts(dataset, epoch))
                if ahead:
                    store(ahead)  # augmented texts known before the epoch: encoded in one call
            running, count = 0.0, 0
            part_sums: dict[str, list[float]] = {}  # name -> [sum, count] of this epoch
            for batch in loader:
                batch = batch.to(device, non_blocking=True)
                with autocast_for(device, cfg.precision):
                    out = objective(model, batch, ctx)
                loss = out.loss
                if not torch.isfinite(loss):
                    raise NonFiniteLossError(f"non-finite loss ({float(loss.detach())}) in stage {stage!r} at epoch {epoch}, step {ctx.step}; "
                                             "lower the learning rate or check the data")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if distributed:
                    ddp.average_gradients(params)
                if cfg.grad_clip_norm:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip_norm)
                optimizer.step()
                scheduler.step()
                with torch.no_grad():
                    model.logit_scale.clamp_(0, max_log_scale)
                objective.on_step_end(model, out, ctx)
                value = float(loss.detach())
                stats.step_losses.append(value)
                running += value
                count += 1
                for name, part in (out.parts or {}).items():
                    try:
                        part = float(part)
                    except (TypeError, ValueError):
                        raise TypeError(f"LossOutput.parts[{name!r}] = {part!r} in stage {stage!r} is not a number; "
                                        "report floats, e.g. float(term.detach())") from None
                    if math.isfinite(part):
                        acc = part_sums.setdefault(str(name), [0.0, 0])
                        acc[0] += part
                        acc[1] += 1
                samples += len(batch) * (ddp.world_size() if distributed else 1)
                ctx.step += 1
                advance(1, loss=running / count)
            stats.loss_history.append(running / max(1, count))
            for name in sorted(set(stats.parts) | set(part_sums)):
                history = stats.parts.setdefault(name, [None] * (epoch - 1))
                acc = part_sums.get(name)
                history.append(acc[0] / acc[1] if acc and acc[1] else None)
    stats.steps = ctx.step
    stats.diagnostics = objective.diagnostics()
    stats.seconds = time.perf_counter() - start
    stats.samples_per_s = samples / max(stats.seconds, 1e-9)
    ddp.restore_batchnorm(switched)
    model.eval()
    return stats
