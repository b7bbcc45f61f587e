"""Wiring of a frozen text body to its per-caption feature store.

A model config whose text body is frozen (``"clipbench": {"text_frozen": true}``, the
embedded default's MiniLM) gets one :class:`~benchmark.text_features.TextFeatureStore`
per body and cache folder in the process (``_feature_store``): the body's pooled
outputs, computed once per caption on a private copy of the body and kept on disk under
the stage cache's ``text/`` folder. :meth:`benchmark.clip_model.ClipModel.encode_text`
then runs only the trainable projection.
"""
from __future__ import annotations

import functools
from pathlib import Path

import torch
from torch import nn

from .clip_model import token_cache


@functools.lru_cache(maxsize=4)
def _store_for(body_path: str, folder: str | None, arch: str, context_length: int | None, body_id: str, text_ref: list):
    from .text_features import TextFeatureStore

    text = text_ref[0]
    body: list[nn.Module] = []

    def encode(ids: torch.Tensor) -> torch.Tensor:
        # in float32, on a private copy of the frozen body (training may move the model's
        # copy to another device or dtype); the store calls it with one fixed shape per
        # caption length, so a caption's value does not depend on its batch companions
        if not body:
            import copy

            body.append(copy.deepcopy(text.transformer).float().cpu().eval())
        mask = torch.ones_like(ids)
        out = body[0](input_ids=ids.cpu(), attention_mask=mask)
        return text.pooler(out, mask).float()

    tokenizer = token_cache(arch, context_length).tokenizer
    return TextFeatureStore(body_id, Path(folder) if folder else None, encode, tokenizer, int(text.config.pad_token_id))


class _Ref(list):
    """A hashable holder, so that the lru_cache keys ignore the module it carries."""

    def __hash__(self) -> int:
        return 0

    def __eq__(self, other) -> bool:
        return isinstance(other, _Ref)


def _feature_store(body_path: str, folder: str | None, arch: str, context_length: int | None, text: nn.Module):
    """The process's feature store of a frozen text body (one per body and cache folder)."""
    from .text_features import file_digest

    weights = Path(body_path) / "model.safetensors"
    body_id = f"{Path(body_path).parent.name}-{file_digest(str(weights))}" if weights.is_file() else Path(body_path).name
    return _store_for(body_path, folder, arch, context_length, body_id, _Ref([text]))
