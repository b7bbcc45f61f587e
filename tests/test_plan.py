"""The stage DAG: cache keys and reuse."""
import dataclasses
import functools
import typing

from benchmark.config import to_dict
from benchmark.data.sources import open_data
from benchmark.plan import make_plan
from benchmark.registry import attack_registry, defense_registry
from benchmark.suite import SuiteConfig


#: the target class comes from the suite (the API has no dataset-specific default)
TARGET = {"target": "sneaker"}


def _alternative(field_type, value, name, tmp_path):
    if name == "target":
        return "bag"
    if name == "eot":  # a defense name (EOT over its image views)
        return "cleanclip" if value is None else "finetune_aug"
    if name.endswith("path"):  # a file-valued field (e.g. blended.pattern_path): a real image file
        from PIL import Image

        path = tmp_path / f"{name}.png"
        Image.new("L", (8, 8), 128).save(path)
        return str(path)
    if typing.get_origin(field_type) is typing.Literal:
        return next(v for v in typing.get_args(field_type) if v != value)
    if value is None:
        return 4
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value / 2 if value else 0.5
    raise AssertionError(f"no alternative for {name}")


@functools.lru_cache(maxsize=None)
def _embedded_data():
    """The default suite's data, opened once (every suite here has the default data config)."""
    return open_data(SuiteConfig(attack_common=TARGET).data)


def _keys(suite, tmp_path, attack="badnet"):
    assert suite.data == SuiteConfig(attack_common=TARGET).data
    plan = make_plan(suite, _embedded_data(), [attack], ["none"], [0], attack_registry(), defense_registry(), tmp_path)
    cell = plan.cells[0]
    return cell.stage_keys["poison"], cell.eval_key


def test_every_trigger_parameter_changes_the_cache_key(tmp_path):
    reg = attack_registry()
    for name in reg.names():
        cls = reg.get(name)
        base = SuiteConfig(attack_common=TARGET)
        base_poison, base_eval = _keys(base, tmp_path, name)
        hints = typing.get_type_hints(cls.Config)
        defaults = to_dict(cls.Config())
        for field in dataclasses.fields(cls.Config):
            alt = _alternative(hints[field.name], defaults[field.name], field.name, tmp_path)
            suite = SuiteConfig(attack_common=TARGET, attacks={name: {field.name: alt}})
            poison, ev = _keys(suite, tmp_path, name)
            assert poison != base_poison, f"{name}.{field.name} does not change the poison key"
            assert ev != base_eval, f"{name}.{field.name} does not change the evaluation key"


def test_seed_changes_keys_and_same_config_gives_same_keys(tmp_path):
    a = _keys(SuiteConfig(attack_common=TARGET), tmp_path)
    assert a == _keys(SuiteConfig(attack_common=TARGET), tmp_path)
    plan = make_plan(SuiteConfig(attack_common=TARGET), open_data(SuiteConfig(attack_common=TARGET).data), ["badnet"], ["none"], [0, 1],
                     attack_registry(), defense_registry(), tmp_path)
    assert plan.cells[0].stage_keys["pretrain"] != plan.cells[1].stage_keys["pretrain"]


def test_pretraining_is_shared_across_attacks(tmp_path):
    suite = SuiteConfig(attack_common=TARGET)
    reg = attack_registry()
    plan = make_plan(suite, open_data(suite.data), reg.names(), ["none"], [0], reg, defense_registry(), tmp_path)
    assert len({c.stage_keys["pretrain"] for c in plan.cells}) == 1
    assert len([n for n in plan.nodes.values() if n.kind == "pretrain"]) == 1
