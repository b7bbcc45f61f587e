import dataclasses

import pytest
import torch

from attacks.badnet import BadNet, BadNetConfig
from benchmark.config import ConfigError


def test_trigger_is_deterministic_for_a_seed():
    x = torch.rand(4, 1, 28, 28)
    for pattern in ("checkerboard", "noise", "white"):
        cfg = BadNetConfig(pattern=pattern, location="random")
        assert torch.equal(BadNet(cfg, seed=3).apply(x), BadNet(cfg, seed=3).apply(x))
    noise = BadNetConfig(pattern="noise")
    assert not torch.equal(BadNet(noise, seed=1).patch(), BadNet(noise, seed=2).patch())


@pytest.mark.parametrize("location", ["bottom_right", "top_left", "center", "random"])
def test_trigger_touches_only_the_patch_and_stays_in_range(location):
    attack = BadNet(BadNetConfig(location=location, pattern="noise"), seed=0)
    x = torch.rand(8, 1, 28, 28)
    y = attack.apply(x)
    mask = attack.mask().expand_as(x[0]).expand_as(x)
    assert torch.equal(y[~mask], x[~mask])
    assert not torch.equal(y[mask], x[mask])
    assert y.min() >= 0 and y.max() <= 1
    assert y.shape == x.shape and y.dtype == x.dtype
    assert int(attack.mask().sum()) == attack.side**2 == 9  # round(16/224*28) -> at least 3 px


def test_default_patch_is_bottom_right_corner():
    attack = BadNet(seed=0)
    assert attack.position() == (25, 25)
    assert attack.mask()[0, 25:, 25:].all()


def test_patch_larger_than_image_is_a_config_error():
    with pytest.raises(ConfigError, match="does not fit"):
        BadNet(BadNetConfig(patch_size=40), seed=0)


def test_poison_rate_must_be_a_fraction():
    with pytest.raises(ConfigError, match="poison_rate"):
        dataclasses.replace(BadNetConfig(), poison_rate=1.5)
