"""Regenerate a poisoned training set from its poison manifest.

Every poisoned set the runner builds is cached with a ``manifest.json`` beside it
(``<cache>/poison/<key>/manifest.json``; each cell result names it under ``poison.manifest``
relative to the cache: ``cache:poison/<key>/manifest.json``). The manifest records every choice the attack made: the attack name,
version, seed and full config, the image shape, target, class names and templates, the
poisoned indices and the captions written there, WaNet's noise-mode indices
(``cross_indices``), counts, the clean split (``data``), for attacks that need one the
reference model (``reference_model.cache_key``, a pretrain artifact of the same cache),
and ``sha256``, a digest of the resulting set.

:func:`regenerate` rebuilds the set from the manifest and the clean split with the
attack's own :meth:`~benchmark.api.Attack.materialize` (the code path used when the set
was first built) and checks the digest, so a manifest either regenerates its set bit for
bit or fails loudly::

    from benchmark.poison import regenerate
    from benchmark.cache import resolve_ref
    manifest = json.loads(resolve_ref(result["poison"]["manifest"]).read_text())  # cache:poison/<key>/manifest.json
    poisoned = regenerate(manifest, clean_train_split)            # PoisonedSet
    poisoned = regenerate_from_cache(result["poison"]["manifest"])  # finds the split and model itself

Label-consistent poisons run PGD against the reference model: pass it as
``reference_model`` (a :class:`~benchmark.models.ClipModel` or a zero-argument loader).
Attacks with an optimised trigger (BadCLIP) record the trigger itself in the manifest
(``trigger.patch_u8``), so regenerating their set does not re-run the optimisation.
PGD is deterministic on one machine and thread count; other hardware may round
differently, which the digest check reports.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import torch

from .api import Attack, AttackContext, PoisonedSet
from .data.digest import pairs_digest
from .config import from_dict
from .data.dataset import TensorPairs
from .clip_model import ClipModel


class ManifestMismatchError(ValueError):
    """A manifest does not describe the data it is applied to, or does not reproduce its digest."""


def attack_from_manifest(manifest: dict[str, Any], attack_cls: type[Attack] | None = None) -> Attack:
    """The attack instance a manifest was produced with (looked up in the registry by name)."""
    if attack_cls is None:
        from .registry import attack_registry

        attack_cls = attack_registry().get(manifest["attack"])
    if str(getattr(attack_cls, "version", "1")) != str(manifest.get("attack_version", "1")):
        raise ManifestMismatchError(
            f"manifest was written by {manifest['attack']} version {manifest.get('attack_version')!r} but the installed "
            f"one is version {attack_cls.version!r}; install the matching clipbench/plugin version")
    config = from_dict(attack_cls.Config, manifest["config"], prefix=f"attacks.{manifest['attack']}.")
    attack = attack_cls(config, seed=int(manifest["seed"]), image_shape=tuple(manifest["image_shape"]))
    if getattr(attack, "optimised_trigger", False):  # BadCLIP: the optimised trigger is in the manifest
        attack.load_trigger_params(manifest["trigger"])
    return attack


def regenerate(manifest: dict[str, Any], clean: TensorPairs, *,
               reference_model: ClipModel | Callable[[], ClipModel] | None = None,
               attack_cls: type[Attack] | None = None, device: torch.device | str = "cpu",
               verify: bool = True) -> PoisonedSet:
    """Rebuild the poisoned set that ``manifest`` describes from the clean split ``clean``.

    ``clean`` must be the split named in ``manifest["data"]`` (same size and image
    shape). With ``verify`` (default) the result's digest must equal ``manifest["sha256"]``,
    else :class:`ManifestMismatchError`.
    """
    if len(clean) != manifest["num_samples"] or list(clean.image_shape) != list(manifest["image_shape"]):
        raise ManifestMismatchError(
            f"the manifest describes {manifest['num_samples']} images of shape {manifest['image_shape']} but the clean "
            f"split has {len(clean)} of shape {list(clean.image_shape)}; pass the split named in manifest['data']")
    attack = attack_from_manifest(manifest, attack_cls)
    loader: Callable[[], ClipModel] | None
    if reference_model is None:
        loader = None
    elif isinstance(reference_model, ClipModel):
        loader = lambda: reference_model  # noqa: E731
    else:
        loader = reference_model
    if attack.needs_reference_model and loader is None and not getattr(attack, "optimised_trigger", False):
        ref = manifest.get("reference_model", {}).get("cache_key", "the clean pre-trained model")
        raise ManifestMismatchError(f"{manifest['attack']} needs its reference model to regenerate: pass "
                                    f"reference_model= (cache key {ref})")
    ctx = AttackContext(tuple(manifest["class_names"]), int(manifest["target_index"]), int(manifest["seed"]),
                        torch.device(device), loader, tuple(manifest["templates"]))
    poisoned = attack.materialize(clean, dict(manifest), ctx)
    if verify and "sha256" in manifest:
        digest = pairs_digest(poisoned.data)
        if digest != manifest["sha256"]:
            raise ManifestMismatchError(f"regenerated set has digest {digest}, the manifest records {manifest['sha256']}: "
                                        "different clean data, attack code or (for PGD) reference model/hardware")
    return poisoned


def clean_split(manifest: dict[str, Any]) -> TensorPairs:
    """The clean split a runner-written manifest was poisoned from (``manifest["data"]``)."""
    from .data.sources import open_data
    from .suite import DataConfig

    from .config import ConfigError
    from .data.captions import CAPTIONS_VERSION

    spec = dict(manifest["data"])
    role = spec.pop("role")
    version = spec.pop("captions_version", 1)
    if spec.get("source") == "embedded" and version != CAPTIONS_VERSION:
        raise ConfigError(f"the manifest was written with embedded captions version {version}, this clipbench "
                          f"makes version {CAPTIONS_VERSION}; regenerate it with the clipbench release that wrote it")
    return open_data(from_dict(DataConfig, spec, prefix="data.")).split(role)


def regenerate_from_cache(manifest_path: str | Path, cache_root: str | Path | None = None,
                          device: torch.device | str = "cpu") -> PoisonedSet:
    """Regenerate (and verify) the set of a cached manifest, ``<root>/poison/<key>/manifest.json``
    or a result's ``cache:poison/<key>/manifest.json`` (resolved under ``cache_root``, default
    ``$CLIPBENCH_CACHE`` or ``~/.cache/clipbench``).

    The clean split comes from ``manifest["data"]``; a reference model, if the attack needs
    one, from the same cache (``cache_root`` defaults to the manifest's cache root).
    """
    from .cache import Cache, resolve_ref
    from .stages import load_model

    path = resolve_ref(manifest_path, cache_root)
    manifest = json.loads(path.read_text())
    if manifest.get("storage") == "overlay":
        raise ManifestMismatchError(f"{path} describes an overlay on external data (benchmark.data.overlay); "
                                    "regenerate it with benchmark.data.overlay.poison_overlay on that source")
    cache = Cache(cache_root if cache_root is not None else path.parents[2])

    def load_reference() -> ClipModel:
        key = manifest["reference_model"]["cache_key"]
        if cache.meta("model", key) is None:
            raise ManifestMismatchError(f"reference model {key} is not in the cache at {cache.root}; rerun "
                                        "`clipbench run` for this attack to rebuild it")
        return load_model(cache, key, device)

    loader = load_reference if "reference_model" in manifest else None
    return regenerate(manifest, clean_split(manifest), reference_model=loader, device=device)
