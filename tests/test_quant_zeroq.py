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


def test_statistics_are_matched_per_sample_and_include_the_input_prior():
    """ZeroQ matches every synthesized sample's per-channel statistics (not the batch's) to
    the BN statistics, plus N(0, 1) at the input: a batch whose halves sit at +1 and -1 has the
    right batch statistics and is still far from the target."""
    bn = nn.BatchNorm2d(3).eval()  # running mean 0, var 1
    model = nn.Sequential(nn.Identity(), bn)
    g = torch.Generator().manual_seed(0)
    x = 0.1 * torch.randn(8, 3, 8, 8, generator=g)
    x[:4] += 1.0
    x[4:] -= 1.0
    assert abs(float(x.mean())) < 0.05 and abs(float(x.std()) - 1) < 0.1  # batch stats "match"
    assert bn_statistics_loss(model, x) > 1.0
    good = torch.randn(8, 3, 8, 8, generator=g)
    assert bn_statistics_loss(model, good) < 0.3  # sampling noise of 64 positions only
    # The input prior: the same BN match with inputs far from N(0, 1) costs more.
    shifted = nn.Sequential(nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3)).eval()
    with torch.no_grad():
        shifted[0].weight.copy_(torch.eye(3).view(3, 3, 1, 1))
        shifted[0].bias.fill_(-5.0)
    assert bn_statistics_loss(shifted, good + 5.0) > bn_statistics_loss(model, good) + 1.0
