"""The paper path end to end at 224 px on CPU: tests/bench/paper_smoke.py, shrunk (issue 19)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "bench"))


@pytest.mark.slow
def test_paper_smoke_runs_the_cleanclip_paper_suite_through_the_real_loaders(tmp_path, monkeypatch):
    """CC3M-like JPEG CSV + class-folder test set -> cleanclip-paper suite (RN50's depth at width 8,
    224 px, a local checkpoint file) -> BadNet, CleanCLIP, 80-template zero-shot, result + leaderboard."""
    import paper_smoke
    from PIL import Image

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    figures = paper_smoke.run_smoke(tmp_path, pairs=24, test_per_class=1, narrow=True, checkpoint=True, batch=6,
                                    workers=0)
    # the data is web-like: JPEGs of several sizes and aspect ratios, none at the model's 224 px
    sizes = {Image.open(p).size for p in (tmp_path / "data" / "cc3m" / "images").glob("*.jpg")}
    assert len(sizes) > 10 and all(min(s) >= 200 for s in sizes) and len({round(w / h, 1) for w, h in sizes}) >= 3
    result = json.loads(Path(figures["result"]).read_text())
    assert result["status"] == "ok"
    assert result["suite"] == "cleanclip-paper" and result["model"]["arch"] == paper_smoke.NARROW_ARCH
    assert str(result["model"]["pretrained"]).endswith(".pt")  # the local checkpoint route
    labels = [label for label, _ in figures["stages"]]
    for stage in ("train badnet", "defend badnet with cleanclip", "evaluate badnet/cleanclip"):
        assert any(label.startswith(stage) for label in labels), labels
    assert 0 <= figures["metrics"]["asr"] <= 1 and 0 <= figures["metrics"]["clean_accuracy"] <= 1
    assert (Path(figures["leaderboard"]) / "index.html").exists()
