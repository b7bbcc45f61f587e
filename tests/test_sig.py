"""SIG: the sinusoid's values, poison-label vs clean-label poisoning."""
import math

import pytest
import torch

from attacks.sig import SIG, SIGConfig
from benchmark.config import ConfigError
from benchmark.data.captions import CLASS_NAMES, ZERO_SHOT_TEMPLATES
from benchmark.testing import check_poison, synthetic_pairs


def test_signal_values_at_known_pixels():
    d = 20 / 255
    attack = SIG(SIGConfig(delta=d, frequency=6), seed=0, image_shape=(3, 32, 32))
    v = attack.signal[0]
    # v(i, j) = d sin(2 pi j 6 / 32): j = 4 -> sin(3 pi / 2) = -1, j = 12 -> sin(9 pi / 2) = 1, j = 0, 16 -> 0
    assert v[0, 4] == pytest.approx(-d, abs=1e-7)
    assert v[7, 12] == pytest.approx(d, abs=1e-7)
    assert v[3, 0] == pytest.approx(0.0, abs=1e-7) and v[3, 16] == pytest.approx(0.0, abs=1e-6)
    assert v[5, 1] == pytest.approx(d * math.sin(2 * math.pi * 6 / 32), abs=1e-7)
    assert torch.equal(v, v[:1].expand_as(v))  # a horizontal sinusoid: every row the same
    x = torch.full((2, 3, 32, 32), 0.5)
    y = attack.apply(x)
    assert torch.allclose(y, 0.5 + v.expand_as(y), atol=1e-7)  # additive, the same on every channel
    assert torch.allclose(y[:, 0], y[:, 2])
    assert float(y.min()) == pytest.approx(0.5 - d, abs=1e-6) and float(y.max()) == pytest.approx(0.5 + d, abs=1e-6)
    # clipping at the ends of [0, 1]
    assert float(attack.apply(torch.zeros(1, 3, 32, 32))[0, 0, 0, 4]) == 0.0
    assert float(attack.apply(torch.ones(1, 3, 32, 32))[0, 0, 0, 12]) == 1.0
    # f counts periods over the width: the same pattern stretched at another resolution
    wide = SIG(SIGConfig(delta=d), seed=0, image_shape=(1, 64, 64)).signal[0, 0]
    assert torch.allclose(wide[::2], v[0], atol=1e-6)


def test_amplitude_scales_the_signal_and_is_validated():
    weak, strong = SIG(SIGConfig(delta=20 / 255)), SIG(SIGConfig(delta=60 / 255))
    assert torch.allclose(strong.signal, 3 * weak.signal, atol=1e-6)
    with pytest.raises(ConfigError, match="delta"):
        SIGConfig(delta=0)
    with pytest.raises(ConfigError, match="frequency"):
        SIG(SIGConfig(frequency=16), image_shape=(1, 32, 32))


def test_poison_label_by_default_and_clean_label_on_request():
    data = synthetic_pairs((3, 32, 32))
    target = CLASS_NAMES.index("sneaker")
    poison = check_poison(SIG, SIGConfig(poison_rate=0.05), image_shape=(3, 32, 32), data=data)
    idx = poison.manifest["indices"]
    assert poison.manifest["clean_label"] is False and poison.manifest["trigger"]["mode"] == "poison-label"
    assert not bool((data.labels[idx] == target).any())
    allowed = {t.format("sneaker") for t in ZERO_SHOT_TEMPLATES}
    assert all(poison.data.captions[i] in allowed for i in idx)

    clean = check_poison(SIG, SIGConfig(poison_rate=0.05, clean_label=True), image_shape=(3, 32, 32), data=data)
    idx = clean.manifest["indices"]
    assert clean.manifest["clean_label"] is True and clean.manifest["trigger"]["mode"] == "clean-label"
    assert bool((data.labels[idx] == target).all()) and len(idx) == 10
    assert clean.data.captions == data.captions  # truthful captions kept
    assert not torch.equal(clean.data.images[idx], data.images[idx])  # the signal is on them
    capped = SIG(SIGConfig(poison_rate=0.5, clean_label=True)).select(data, target)
    assert len(capped) == int((data.labels == target).sum())  # capped at the target class's size
