"""ZeroQ-style synthesis: the synthesized batch matches BN statistics better than noise."""
import torch
from torch import nn

from normapps.models import build_classifier
from normapps.tasks.quantization.zeroq import bn_statistics_loss, synthesize_calibration_data

import pytest

pytestmark = pytest.mark.usefixtures("one_thread")


def test_synthesized_data_matches_bn_statistics_better_than_noise():
    torch.manual_seed(0)
    model = build_classifier("small_cnn", num_classes=10, width=8)
    # Give the BNs non-trivial running statistics by running real-ish data through in train mode.
    model.train()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None  # exact statistics of one input distribution: reachable targets
    with torch.no_grad():
        for _ in range(5):
            model(torch.rand(32, 3, 16, 16) * 0.5 + 0.25)
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    synth = synthesize_calibration_data(model, input_shape=(3, 16, 16), num_samples=24,
                                        batch_size=12, steps=60, lr=0.1, seed=0)
    assert synth.shape == (24, 3, 16, 16)
    noise = torch.randn(12, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    assert bn_statistics_loss(model, synth[:12]) < 0.25 * bn_statistics_loss(model, noise)
    # The model itself is untouched (weights, statistics, requires_grad).
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k])
    assert all(p.requires_grad for p in model.parameters())


def test_synthesis_needs_batch_norm():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    with pytest.raises(ValueError, match="BatchNorm"):
        synthesize_calibration_data(model, input_shape=(3, 8, 8), num_samples=2, steps=1)
