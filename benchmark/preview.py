"""Trigger previews: a PNG grid of clean vs triggered test images per attack.

``clipbench preview --attack NAMES|all [--out PATH]`` calls :func:`save_preview`. For each
attack, with the suite's resolved config and the given seed, it shows the *test-time*
trigger ``apply(x)`` on the same test images (one per non-target class), quantised to
uint8 exactly as in evaluation, plus a row of the amplified absolute difference so that
near-invisible triggers (WaNet's sub-pixel warp, a 0.2 noise blend) can be seen.
Label-consistent's training images additionally carry a PGD perturbation that needs the
clean model; the preview shows the trigger only (what every test image gets). An attack
whose trigger is optimised on the clean model (BadCLIP) is drawn with the trigger its
cached ``trigger`` stage holds (computed first if missing, as a run would).

Beside the grid, :func:`save_preview` writes one thumbnail per attack into
``<folder of the grid>/attacks/<name>.png`` (:func:`thumbnail`: one test image clean,
triggered and the amplified difference, at twice the size); the leaderboard shows them in
its attack ranking when they sit in ``<results-dir>/previews/attacks/`` (the committed
``results/previews/`` does: ``clipbench preview --attack all`` refreshes both).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from .data.dataset import TensorPairs, to_uint8


def preview_images(test: TensorPairs, target: int, per_row: int = 8) -> torch.Tensor:
    """The first test image of each non-target class (up to ``per_row``), uint8 (N, C, H, W)."""
    picks: list[int] = []
    seen: set[int] = set()
    for i, label in enumerate(test.labels.tolist()):
        if label != target and label not in seen:
            picks.append(i)
            seen.add(label)
        if len(picks) == per_row:
            break
    return test.images[picks]


def mosaic(rows: Sequence[tuple[str, torch.Tensor]], pad: int = 2) -> np.ndarray:
    """One (rows*(H+pad), cols*(W+pad), 3) uint8 canvas of the rows' images (grey -> RGB)."""
    ncols = max(len(r[1]) for r in rows)
    _, h, w = rows[0][1].shape[1:]
    canvas = np.full((len(rows) * (h + pad) + pad, ncols * (w + pad) + pad, 3), 96, dtype=np.uint8)
    for r, (_, images) in enumerate(rows):
        for c, img in enumerate(images):
            arr = img.permute(1, 2, 0).numpy()
            arr = np.repeat(arr, 3, axis=2) if arr.shape[2] == 1 else arr[:, :, :3]
            top, left = pad + r * (h + pad), pad + c * (w + pad)
            canvas[top : top + h, left : left + w] = arr
    return canvas


def render(rows: Sequence[tuple[str, torch.Tensor]], out: Path, title: str = "") -> Path:
    """Draw labelled rows of uint8 image batches into one PNG (matplotlib, no display)."""
    from matplotlib.figure import Figure

    canvas = mosaic(rows)
    ncols = max(len(r[1]) for r in rows)
    fig = Figure(figsize=(1.1 * ncols + 2.4, 1.1 * len(rows) + 0.5), dpi=110)
    ax = fig.add_axes((2.4 / (1.1 * ncols + 2.4), 0.02, 1 - 2.5 / (1.1 * ncols + 2.4), 0.93 - 0.2 / len(rows)))
    ax.imshow(canvas, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([(r + 0.5) * canvas.shape[0] / len(rows) for r in range(len(rows))])
    ax.set_yticklabels([label for label, _ in rows], fontsize=8)
    ax.tick_params(length=0)
    if title:
        fig.suptitle(title, fontsize=9)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    return out


def attack_rows(name: str, attack: Any, clean_u8: torch.Tensor, amplify: float = 5.0) -> list[tuple[str, torch.Tensor]]:
    """Two rows for one attack: the triggered images and |T(x) - x| amplified."""
    x = clean_u8.float() / 255
    triggered = to_uint8(attack.apply(x))
    diff = to_uint8(((triggered.float() - clean_u8.float()).abs() / 255 * amplify).clamp(0, 1))
    return [(f"{name}", triggered), (f"|{name} - clean|\nx{amplify:g}", diff)]


def thumbnail(attack: Any, clean_u8: torch.Tensor, scale: int = 2, amplify: float = 5.0, pad: int = 2) -> np.ndarray:
    """One attack's thumbnail: a test image clean, triggered and ``|T(x) - x| * amplify``, side
    by side, each ``scale`` times (nearest), as an (H', W', 3) uint8 array."""
    x = clean_u8[:1]
    triggered = to_uint8(attack.apply(x.float() / 255))
    diff = to_uint8(((triggered.float() - x.float()).abs() / 255 * amplify).clamp(0, 1))
    canvas = mosaic([("", torch.cat([x, triggered, diff]))], pad=pad)
    return np.repeat(np.repeat(canvas, scale, axis=0), scale, axis=1)


def save_thumbnails(session: Any, attacks: Sequence[str], out_dir: str | Path, seed: int = 0) -> dict[str, Path]:
    """Write ``<out_dir>/<name>.png`` (:func:`thumbnail`) for every attack; returns the paths."""
    from PIL import Image

    test = session.split("test")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name in attacks:
        attack = session.method("attack", name, seed)
        path = out_dir / f"{name}.png"
        Image.fromarray(thumbnail(attack, preview_images(test, session.target(attack), 1))).save(path)
        paths[name] = path
    return paths


def _open(session: Any, suite: Any, registry: Any) -> Any:
    """The session to draw with: ``session``, else one opened on ``suite`` (default: embedded)."""
    from .session import Session

    if session is None:
        session = Session.open(suite if suite is not None else "embedded")
    if registry is not None:
        session.attacks = session.stages.attacks = registry
    return session


def save_preview(attacks: Sequence[str], out: str | Path, suite: Any = None, seed: int = 0,
                 registry: Any = None, per_row: int = 8, session: Any = None) -> Path:
    """Render the preview of ``attacks`` (registry names) for a :class:`~benchmark.session.Session`
    (default: one opened on ``suite``, itself defaulting to embedded), and each attack's
    thumbnail into ``<out's folder>/attacks/<name>.png`` (:func:`save_thumbnails`)."""
    session = _open(session, suite, registry)
    test = session.split("test")
    rows: list[tuple[str, torch.Tensor]] = []
    clean = None
    for name in attacks:
        attack = session.method("attack", name, seed)
        images = preview_images(test, session.target(attack), per_row)
        if clean is None or not torch.equal(clean, images):
            clean = images
            rows.append(("clean", images))
        rows.extend(attack_rows(name, attack, images))
    title = f"test-time triggers ({session.suite.name}, seed {seed}; difference rows amplified)"
    path = render(rows, Path(out), title)
    save_thumbnails(session, attacks, Path(out).parent / "attacks", seed)
    return path


def summary(attacks: Sequence[str], suite: Any = None, seed: int = 0, registry: Any = None,
            session: Any = None) -> dict[str, dict[str, float]]:
    """Per attack: mean and max |T(x) - x| over the preview images (uint8 units / 255)."""
    session = _open(session, suite, registry)
    test = session.split("test")
    out = {}
    for name in attacks:
        attack = session.method("attack", name, seed)
        images = preview_images(test, session.target(attack))
        d = (to_uint8(attack.apply(images.float() / 255)).float() - images.float()).abs() / 255
        out[name] = {"mean_abs_change": float(d.mean()), "max_abs_change": float(np.max(d.numpy()))}
    return out
