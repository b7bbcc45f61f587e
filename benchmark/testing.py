"""Contract checks shared with plugin authors (timm-style): call them from your own tests.

::

    from benchmark.testing import check_attack
    from my_plugin import MyAttack

    def test_my_attack_honours_the_contract():
        check_attack(MyAttack)

Each check raises ``AssertionError`` naming the broken rule. They run in a second or two
on synthetic data (a seeded, class-balanced uint8 set) and, for attacks that need a
reference model, a randomly initialised micro CLIP; nothing is downloaded.

The checks live in :mod:`benchmark.attack_contract`, :mod:`benchmark.defense_contract` and
:mod:`benchmark.detector_checks` (:func:`check_detector`), their synthetic data in
:mod:`benchmark.contract_data`; every name is importable from here.
"""
from __future__ import annotations

from .attack_contract import check_attack, check_poison, check_trigger, expected_poison_count
from .contract_data import caption_pairs, synthetic_pairs
from .defense_contract import HOOKS, check_defense, check_hooks
from .detector_checks import check_detector, poisoned_pairs

__all__ = ["HOOKS", "caption_pairs", "check_attack", "check_defense", "check_detector", "check_hooks", "check_poison",
           "check_trigger", "expected_poison_count", "poisoned_pairs", "synthetic_pairs"]
