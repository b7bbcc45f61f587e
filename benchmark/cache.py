"""Content-addressed artifact store for stage outputs.

Each artifact lives in ``<root>/<kind>/<key>/``: its files plus ``meta.json`` holding the
stage's resolved spec, timings and the SHA-256 of every file. Entries are written into a
temporary folder and renamed into place (atomic), so an interrupted stage leaves no
half-written entry; an entry whose files do not match their recorded hashes is treated
as absent (and removed), so it is rebuilt and never used. Checkpoints are safetensors:
loading one cannot execute code. The root defaults to ``~/.cache/clipbench`` and is
overridden by ``CLIPBENCH_CACHE``.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

ENV = "CLIPBENCH_CACHE"


def default_root() -> Path:
    env = os.environ.get(ENV)
    if env:
        return Path(env).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "clipbench"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file and rename (never half-written)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class CacheError(RuntimeError):
    pass


REF_PREFIX = "cache:"


def resolve_ref(ref: str | Path, root: str | Path | None = None) -> Path:
    """A path recorded in a result: ``cache:<kind>/<key>/<file>`` (relative to the stage cache,
    so results name no machine's folders) under ``root`` (default: :func:`default_root`);
    any other string is a plain path (results written before refs existed)."""
    text = str(ref)
    if text.startswith(REF_PREFIX):
        return (Path(root) if root is not None else default_root()) / text[len(REF_PREFIX):]
    return Path(text)


class Cache:
    """Artifacts keyed by ``(kind, key)``; ``key`` is a ``sha256:`` config hash."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root is not None else default_root()

    def path(self, kind: str, key: str) -> Path:
        return self.root / kind / key.removeprefix("sha256:")[:32]

    def ref(self, kind: str, key: str, name: str) -> str:
        """``cache:<kind>/<key>/<name>``: the file's place relative to any cache root (:func:`resolve_ref`)."""
        return f"{REF_PREFIX}{kind}/{key.removeprefix('sha256:')[:32]}/{name}"

    def meta(self, kind: str, key: str) -> dict[str, Any] | None:
        """The entry's metadata if the entry exists and is intact, else None."""
        folder = self.path(kind, key)
        meta_file = folder / "meta.json"
        if not meta_file.exists():
            return None
        try:
            meta = json.loads(meta_file.read_text())
            ok = meta.get("key") == key and all(
                (folder / name).exists() and _sha256(folder / name) == digest for name, digest in meta["files"].items())
        except (OSError, ValueError, KeyError, TypeError):
            ok = False
        if not ok:  # corrupt or foreign: never use it, rebuild instead
            shutil.rmtree(folder, ignore_errors=True)
            return None
        return meta

    def has(self, kind: str, key: str) -> bool:
        return self.meta(kind, key) is not None

    def put(self, kind: str, key: str, files: dict[str, Any], meta: dict[str, Any]) -> Path:
        """Store ``files`` (name -> tensors dict | JSON-able | bytes) atomically."""
        final = self.path(kind, key)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}."))
        try:
            digests = {}
            for name, payload in files.items():
                target = tmp / name
                if name.endswith(".safetensors"):
                    save_file({k: v.detach().contiguous().cpu().clone() for k, v in payload.items()}, str(target))
                elif name.endswith(".json"):
                    target.write_text(json.dumps(payload, indent=1, sort_keys=True))
                else:
                    target.write_bytes(payload)
                digests[name] = _sha256(target)
            (tmp / "meta.json").write_text(json.dumps({**meta, "key": key, "kind": kind, "files": digests}, indent=1, default=str))
            if self.meta(kind, key) is not None:  # a concurrent run stored it first: keep theirs
                shutil.rmtree(tmp, ignore_errors=True)
                return final
            if final.exists():  # a stale or corrupt entry
                shutil.rmtree(final, ignore_errors=True)
            try:
                os.replace(tmp, final)
            except OSError:
                if not (final / "meta.json").exists():
                    raise
                shutil.rmtree(tmp, ignore_errors=True)  # a concurrent run stored it first: keep theirs
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return final

    def tensors(self, kind: str, key: str, name: str) -> dict[str, torch.Tensor]:
        return load_file(str(self.path(kind, key) / name))

    def json(self, kind: str, key: str, name: str) -> Any:
        return json.loads((self.path(kind, key) / name).read_text())
