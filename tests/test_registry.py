import sys

import pytest

from benchmark.api import Attack, Defense
from benchmark.registry import Registry, RegistryError, attack_registry, defense_registry


def test_builtin_names_are_listed_without_importing_the_method_modules():
    sys.modules.pop("attacks.badnet", None)
    reg = attack_registry()
    assert "badnet" in reg.names()
    assert "attacks.badnet" not in sys.modules  # lazy: nothing imported yet
    cls = reg.get("badnet")
    assert "attacks.badnet" in sys.modules
    assert issubclass(cls, Attack) and cls.name == "badnet"


def test_unknown_name_suggests_close_matches():
    reg = attack_registry()
    with pytest.raises(RegistryError) as err:
        reg.get("badnett")
    assert "did you mean 'badnet'" in str(err.value)
    with pytest.raises(RegistryError, match="unknown defense 'zzz'.*choose from"):
        defense_registry().get("zzz")


def test_resolve_all_and_lists():
    reg = defense_registry()
    assert reg.resolve("all") == reg.names()
    assert reg.resolve("none") == ["none"]
    with pytest.raises(RegistryError):
        reg.resolve("none,clenclip")


def test_conflicting_names_are_reported_not_shadowed():
    reg = Registry("defense", {"none": "defenses.none:NoDefense"}, None, Defense)
    reg.register("none", "my_plugin.mod:Other", source="plugin my-plugin 0.1")
    with pytest.raises(RegistryError, match="defined twice"):
        reg.get("none")


def test_reserved_name_and_bad_target():
    with pytest.raises(RegistryError, match="reserved"):
        Registry("attack", {"all": "x:Y"})
    reg = Registry("attack", {"broken": "no_such_module_xyz:Cls"}, None, Attack)
    with pytest.raises(RegistryError, match="failed to import"):
        reg.get("broken")
    reg.try_load_all()
    assert reg.entry("broken").error


def test_non_subclass_is_rejected():
    reg = Registry("attack", {"weird": "benchmark.config:ConfigError"}, None, Attack)
    with pytest.raises(RegistryError, match="not a subclass of Attack"):
        reg.get("weird")
