import torch
import torch.nn.functional as F

from benchmark.data.dataset import TensorPairs
from benchmark.evaluate import der, evaluate, score, wilson_interval

K = 4
NAMES = ("a", "b", "c", "d")


class FakeModel(torch.nn.Module):
    """Classifies an image by the class code in pixel (0, 0); a trigger pixel means 'target'."""

    def __init__(self, target_only_for_target_class: bool = False, target: int = 2):
        super().__init__()
        self.target, self.only_target = target, target_only_for_target_class

    def encode_text(self, captions):
        return F.one_hot(torch.tensor([NAMES.index(c.split()[-1]) for c in captions]), K).float()

    def encode_image(self, x):
        cls = (x[:, 0, 0, 0] * 10).round().long()
        triggered = x[:, 0, -1, -1] > 0.99
        if self.only_target:
            triggered = triggered & (cls == self.target)
        return F.one_hot(torch.where(triggered, torch.full_like(cls, self.target), cls), K).float()


def _data(n_per_class=5):
    labels = torch.arange(K).repeat_interleave(n_per_class)
    images = torch.zeros(len(labels), 1, 8, 8, dtype=torch.uint8)
    images[:, 0, 0, 0] = (labels * 255 / 10).round().to(torch.uint8)
    return TensorPairs(images, ["x"] * len(labels), labels)


def trigger(x):
    y = x.clone()
    y[:, :, -1, -1] = 1.0
    return y


def test_asr_excludes_target_class_images():
    data = _data()
    m = evaluate(FakeModel(), data, NAMES, ("a photo of {}",), trigger, target=2)
    assert m.clean_accuracy == 1.0
    assert m.counts["triggered"] == 15  # 20 images minus the 5 of the target class
    assert m.asr == 1.0 and m.ra == 0.0
    # A model that only calls *target-class* images the target has zero ASR; the
    # inflated definition (all images) would report 5/20 = 1/K.
    m2 = evaluate(FakeModel(target_only_for_target_class=True), data, NAMES, ("a photo of {}",), trigger, target=2)
    assert m2.asr == 0.0 and m2.ra == 1.0


def test_score_rejects_target_class_in_triggered_set():
    import pytest

    logits = torch.eye(K)
    with pytest.raises(ValueError, match="exclude the target"):
        score(logits, torch.arange(K), logits, torch.arange(K), target=1)


def test_wilson_interval_and_der():
    lo, hi = wilson_interval(90, 100)
    assert 0.82 < lo < 0.9 < hi < 0.95
    assert wilson_interval(0, 0) == (0.0, 1.0)
    assert der(1.0, 0.0, 0.9, 0.9) == 1.0
    assert der(1.0, 1.0, 0.9, 0.9) == 0.5
    assert abs(der(0.9, 0.1, 0.9, 0.8) - (0.8 - 0.1 + 1) / 2) < 1e-9
