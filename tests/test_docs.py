"""The product carries its own documentation: the methods page, and no pointer outside the repository."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

from benchmark.registry import attack_registry, defense_registry, detector_registry

ROOT = Path(__file__).resolve().parents[1]
METHODS = ROOT / "benchmark" / "METHODS.md"
TEXT = (".py", ".md", ".yaml", ".toml", ".j2", ".txt", ".cfg")


def _builtin(reg) -> list[str]:
    return [e.name for e in reg.entries() if e.source == "builtin"]


def test_the_methods_page_covers_every_builtin_method_and_ships_with_the_package():
    text = METHODS.read_text()
    for heading in ("## 1. Threat model", "## 2. Metrics", "## 3. Attacks", "## 4. Defenses", "## 5. Detection"):
        assert heading in text
    for name in _builtin(attack_registry()) + _builtin(defense_registry()) + _builtin(detector_registry()):
        assert re.search(rf"^### {re.escape(name)}(:|$)", text, re.M), f"{name} has no section in METHODS.md"
    for metric in ("**CA", "**ASR", "**RA", "**DER", "Clean-model ASR", "**AUROC**", "**AUPRC**", "**TPR at"):
        assert metric in text
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "METHODS.md" in data["benchmark"]


def test_nothing_points_outside_the_repository():
    """No ../shared, no methods.md other than the shipped one."""
    offenders = []
    for path in sorted(ROOT.rglob("*")):
        rel = path.relative_to(ROOT)
        if not path.is_file() or path.suffix not in TEXT or rel.parts[0] in (".git", "results") or \
                any(p.endswith(".egg-info") or p == "__pycache__" for p in rel.parts) or rel == Path(__file__).relative_to(ROOT):
            continue
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if "../shared" in line or "shared/spec" in line or re.search(r"(?<![A-Za-z/])methods\.md", line):
                offenders.append(f"{rel}:{n}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


def test_clipbench_list_points_at_the_methods_page(capsys):
    from benchmark.cli import main

    assert main(["list"]) == 0
    out = capsys.readouterr().out.replace("\n", "")
    assert str(METHODS) in out


def test_the_readme_variant_example_is_the_real_folder_name():
    from benchmark.results import variant_name

    readme = (ROOT / "README.md").read_text()
    example = re.search(r"results/(embedded~attacks\.badnet\.pattern=noise-[0-9a-f]{6})/", readme).group(1)
    assert example == variant_name("embedded", {"attacks.badnet.pattern": "noise"})
