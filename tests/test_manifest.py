"""The poison manifest written next to every cached poisoned set regenerates it bit for bit."""
import json

import pytest
import torch

from benchmark.api import pairs_digest
from benchmark.cache import Cache
from benchmark.config import parse_set
from benchmark.data.sources import open_data
from benchmark.plan import make_plan
from benchmark.poison import ManifestMismatchError, clean_split, regenerate, regenerate_from_cache
from benchmark.registry import attack_registry, defense_registry
from benchmark.stages import StageExecutor
from benchmark.suite import load_suite

from conftest import TINY_SETS

#: a tiny suite; WaNet with noise mode, a short PGD and short trigger optimisations so that every code path is covered
SETS = [*TINY_SETS, "pretrain.epochs=1", "attacks.wanet.cross_ratio=2", "attacks.label_consistent.pgd_steps=3",
        "attacks.badclip.steps=3", "attacks.badclip_eot.steps=3"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: threads only add OpenMP contention
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def poisoned_cache(tmp_path_factory):
    """Run the pretrain and poison stages of every registered attack into a fresh cache."""
    suite = load_suite("embedded", parse_set(SETS))
    data = open_data(suite.data)
    attacks, defenses = attack_registry(), defense_registry()
    root = tmp_path_factory.mktemp("cache")
    plan = make_plan(suite, data, attacks.names(), ["none"], [0], attacks, defenses, root / "results")
    executor = StageExecutor(Cache(root), data, attacks, defenses, torch.device("cpu"))
    keys = {c.attack: c.stage_keys["poison"] for c in plan.cells}
    for node in plan.needed(set(keys.values())):
        executor.run(node)
    return executor, keys


@pytest.mark.parametrize("attack", sorted(attack_registry().names()))
def test_manifest_regenerates_the_cached_poisoned_set_bit_for_bit(poisoned_cache, attack):
    executor, keys = poisoned_cache
    key = keys[attack]
    path = executor.cache.path("poison", key) / "manifest.json"
    manifest = json.loads(path.read_text())
    stored = executor.load_poisoned(key).data
    assert manifest["sha256"] == pairs_digest(stored)
    assert manifest["num_poisoned"] == int(stored.poisoned.sum()) == len(manifest["indices"]) == len(manifest["captions"])
    assert manifest["data"]["role"] == "train" and manifest["seed"] == 0
    if attack == "label_consistent":
        assert manifest["reference_model"]["cache_key"].startswith("sha256:")
        assert manifest["trigger"]["pgd"]["steps"] == 3
    if attack == "wanet":
        assert manifest["num_cross"] == 2 * manifest["num_poisoned"] > 0
    if attack.startswith("badclip"):  # the optimised trigger: its stage, and the patch itself
        assert manifest["trigger_stage"].startswith("cache:trigger/")
        key = manifest["trigger_stage"].split("/")[1]
        stored_patch = executor.cache.tensors("trigger", key, "trigger.safetensors")["patch"]
        assert manifest["trigger"]["patch_u8"] == stored_patch.tolist()

    rebuilt = regenerate_from_cache(path).data  # from the manifest + the clean split only
    assert torch.equal(rebuilt.images, stored.images)
    assert rebuilt.captions == stored.captions
    assert torch.equal(rebuilt.labels, stored.labels)
    assert torch.equal(rebuilt.poisoned, stored.poisoned)


def test_a_tampered_manifest_is_detected(poisoned_cache):
    executor, keys = poisoned_cache
    manifest = json.loads((executor.cache.path("poison", keys["blended"]) / "manifest.json").read_text())
    clean = clean_split(manifest)
    assert regenerate(manifest, clean).manifest["sha256"] == manifest["sha256"]
    for field, value in (("seed", 1), ("indices", [i + 1 for i in manifest["indices"]])):
        with pytest.raises(ManifestMismatchError, match="digest"):
            regenerate({**manifest, field: value}, clean)
    with pytest.raises(ManifestMismatchError, match="clean split"):
        regenerate(manifest, clean.subset(range(10)))


def test_label_consistent_needs_its_reference_model_to_regenerate(poisoned_cache):
    executor, keys = poisoned_cache
    manifest = json.loads((executor.cache.path("poison", keys["label_consistent"]) / "manifest.json").read_text())
    with pytest.raises(ManifestMismatchError, match="reference model"):
        regenerate(manifest, clean_split(manifest))
