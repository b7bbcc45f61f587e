"""tests/gpu/check.sh's entry points work on the CPU (the GPU check itself needs a CUDA machine)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
GPU = ROOT / "tests" / "gpu"


def test_check_sh_is_valid_bash_and_names_every_part():
    subprocess.run(["bash", "-n", str(GPU / "check.sh")], check=True)
    text = (GPU / "check.sh").read_text()
    for needle in ("--cpu-dry", "RN50 ViT-B-32", "torch.distributed.run", "--attack all --defense all", "gpu_check.json"):
        assert needle in text, needle


@pytest.mark.slow
def test_gpu_check_entry_points_write_their_figures_on_cpu(tmp_path, monkeypatch):
    sys.path.insert(0, str(GPU))
    import gpu_check

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    gpu_check.main(["device", str(tmp_path / "device.json")])
    for data in ("memory", "loader"):
        gpu_check.main(["train", str(tmp_path / f"{data}.json"), "--arch", "clipbench-micro-rn", "--data", data,
                        "--batch", "4", "--steps", "2", "--warmup", "1", "--device", "cpu", "--wordnet", "subset",
                        "--work", str(tmp_path)])
    gpu_check.main(["merge", str(tmp_path / "all.json"), str(tmp_path / "device.json"), str(tmp_path / "memory.json"),
                    str(tmp_path / "loader.json")])
    merged = json.loads((tmp_path / "all.json").read_text())
    assert merged["device"]["cpu_count"] >= 1 and merged["device"]["cuda_available"] in (True, False)
    for data in ("memory", "loader"):
        fig = merged[data]
        assert fig["steps"] == 2 and fig["global_batch"] == 4 and fig["image_size"] == 224 and fig["data"] == data
        assert fig["images_per_s"] > 0 and fig["final_loss"] > 0
    # the loader part read paper_smoke's web-sized JPEG CSV
    assert len(list((tmp_path / "smoke-data" / "cc3m" / "images").glob("*.jpg"))) == 12
